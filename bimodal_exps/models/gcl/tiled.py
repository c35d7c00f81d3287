"""Tiled row reductions over the b×B similarity matrix (`--loss_tile N`, docs/losses.md §16).

Every contrastive loss here reduces each anchor row i of S = anchors·candidatesᵀ to a few numbers: a
log-sum-exp (the normaliser, no gradient) and a weighted sum Σ_j f(S_ij) whose gradient is
Σ_j f'(S_ij)·candidate_j (anchors) and Σ_i f'(S_ij)·anchor_i (candidates). Both are computed here in
[N, N] blocks (rows and columns of N), and the backward recomputes each block instead of keeping one, so
no b×B similarity, weight or gradient matrix exists; peak memory is O(N² + B·d) instead of O(b·B).
`tile = 0` means one block (the untiled layout, used by the tests as the reference).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# a block's elementwise terms: (S block [r, c] (with grad in the backward), rows, cols, *params) -> [r, c]
BlockFn = Callable[..., Tensor]


def blocks(n: int, tile: int) -> list[slice]:
    """Consecutive slices of `tile` indices covering range(n) (one slice when tile is 0); the last may be ragged."""
    step = tile if tile > 0 else max(n, 1)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def positive_mask(pos_col: Tensor, rows: slice, cols: slice) -> Tensor:
    """[r, c] True where column `cols` holds row `rows`' own pair (its global column `pos_col`)."""
    return pos_col[rows].unsqueeze(1) == torch.arange(cols.start, cols.stop, device=pos_col.device)


class _RowSum(torch.autograd.Function):
    """r_i = Σ_j fn(S_ij) with S = anchors·candsᵀ, formed block by block in forward and backward."""

    @staticmethod
    def forward(ctx, fn: BlockFn, tile: int, anchors: Tensor, cands: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        ctx.fn, ctx.tile = fn, tile
        ctx.save_for_backward(anchors, cands, *params)
        out = anchors.new_zeros(anchors.shape[0])
        for rows in blocks(anchors.shape[0], tile):
            for cols in blocks(cands.shape[0], tile):
                out[rows] += fn(anchors[rows] @ cands[cols].T, rows, cols, *params).sum(dim=1)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        anchors, cands, *params = (t.detach() for t in ctx.saved_tensors)
        need_a, need_c, *need_p = ctx.needs_input_grad[2:]
        grad_a = torch.zeros_like(anchors) if need_a else None
        grad_c = torch.zeros_like(cands) if need_c else None
        leaves = [p.requires_grad_(n) for p, n in zip(params, need_p)]
        wanted = [p for p, n in zip(leaves, need_p) if n]
        grad_p = [torch.zeros_like(p) for p in wanted]
        for rows in blocks(anchors.shape[0], ctx.tile):
            for cols in blocks(cands.shape[0], ctx.tile):
                with torch.enable_grad():
                    s = (anchors[rows] @ cands[cols].T).requires_grad_()
                    value = torch.einsum("ij,i->", ctx.fn(s, rows, cols, *leaves), grad[rows])
                    grad_s, *grads = torch.autograd.grad(value, [s, *wanted])
                if grad_a is not None:
                    grad_a[rows] += grad_s @ cands[cols]
                if grad_c is not None:
                    grad_c[cols] += grad_s.T @ anchors[rows]
                for acc, g in zip(grad_p, grads):
                    acc += g
        grad_p_iter = iter(grad_p)
        return (None, None, grad_a, grad_c, *(next(grad_p_iter) if n else None for n in need_p))


def row_sum(fn: BlockFn, anchors: Tensor, cands: Tensor, params: Sequence[Tensor], tile: int) -> Tensor:
    """[b] Σ_j fn(anchors_i·cands_j) with gradients to anchors, cands and `params`, never forming [b, B]."""
    return _RowSum.apply(fn, tile, anchors, cands, *params)


@dataclass(frozen=True)
class Pairs:
    """One direction: local anchors against the global candidates, x_ij = (S_ij − S_ii)/τ_i."""

    anchors: Tensor   # [b, d] local anchor features
    cands: Tensor     # [B, d] global candidate features
    pos: Tensor       # [b] S_ii of the local pairs (with grad)
    pos_col: Tensor   # [b] global column of each anchor's own pair
    tau: Tensor       # [b] detached anchor temperatures
    mask_positive: bool = True
    log_cap: float | None = None

    def x(self, s: Tensor, rows: slice, cols: slice) -> Tensor:
        """x block from an S block (detached), capped, −inf at the positive column when masked."""
        x = (s.detach() - self.pos.detach()[rows].unsqueeze(1)) / self.tau[rows].unsqueeze(1)
        if self.log_cap is not None:
            x = x.clamp(max=self.log_cap)
        if self.mask_positive:
            x = x.masked_fill(positive_mask(self.pos_col, rows, cols), -math.inf)
        return x

    @torch.no_grad()
    def logsumexp(self, tile: int) -> tuple[Tensor, Tensor]:
        """(m_i, log Σ_j exp(x_ij − m_i)) by an online log-sum-exp over column blocks; m_i = max_j x_ij."""
        b = self.anchors.shape[0]
        row_max = self.anchors.new_full((b,), -math.inf)
        total = self.anchors.new_zeros(b)
        for rows in blocks(b, tile):
            for cols in blocks(self.cands.shape[0], tile):
                x = self.x(self.anchors[rows] @ self.cands[cols].T, rows, cols)
                new_max = torch.maximum(row_max[rows], x.amax(dim=1))
                shift = new_max.nan_to_num(neginf=0.0)  # a block masked entirely leaves the row at −inf
                total[rows] = total[rows] * torch.exp(row_max[rows] - shift) + \
                    torch.exp(x - shift.unsqueeze(1)).sum(dim=1)
                row_max[rows] = new_max
        return row_max, total.log()

    def weighted_h(self, row_max: Tensor, log_scale: Tensor, tile: int) -> Tensor:
        """[b] Σ_j w_ij·h_ij, w_ij = exp(x_ij − m_i)·e^{log_scale_i} detached, with the gradient of h = S − S_ii."""
        return row_sum(self._weighted_h_block, self.anchors, self.cands, (self.pos, row_max, log_scale), tile)

    def _weighted_h_block(self, s: Tensor, rows: slice, cols: slice, pos: Tensor, row_max: Tensor,
                          log_scale: Tensor) -> Tensor:
        weights = torch.exp(self.x(s, rows, cols) - row_max[rows].unsqueeze(1) + log_scale[rows].unsqueeze(1))
        return weights * (s - pos[rows].unsqueeze(1))
