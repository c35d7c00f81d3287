"""The few collectives the losses need (docs/losses.md §11).

Every function is the identity (or a no-op) when torch.distributed is not initialised or the world
has one rank, so the losses run unchanged in a single process. Gathered tensors are concatenated
rank-major along dim 0 (global position = rank·b + local slot), which assumes the same per-rank
batch size on every rank (the samplers pad to full batches).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(x: Tensor, world: int) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _AllGatherSumBackward(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and keeps the own chunk.

    Every rank's loss depends on every rank's features (as candidates), so the gradient of the sum
    of the per-rank losses w.r.t. the local features is the reduce-scatter of the gathered-feature
    gradients (OpenCLIP `gather_with_grad`, docs/losses.md §11).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank, ctx.world = rank_and_world()
        ctx.rows = x.shape[0]
        return _gather(x, ctx.world)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = torch.empty((ctx.rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad)
            return out
        dist.all_reduce(grad)  # gloo has no reduce_scatter
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """[b, ...] local rows -> [W·b, ...] global rows; gradients flow back summed over ranks."""
    _, world = rank_and_world()
    if world == 1:
        return x
    return _AllGatherSumBackward.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: Tensor) -> Tensor:
    """[b, ...] -> [W·b, ...] without autograd (ids, state values)."""
    _, world = rank_and_world()
    if world == 1:
        return x
    return _gather(x, world)


@torch.no_grad()
def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum over ranks (a new tensor; the input is left untouched)."""
    _, world = rank_and_world()
    if world == 1:
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out
