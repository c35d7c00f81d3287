"""Worker for the 2-process gloo test of the unimodal losses (not a test module).

As in tests/losses/dist_worker.py: the "model" is one parameter P ([B, 2d], identical on every rank);
rank r feeds normalise(P[r·b:(r+1)·b]) split into the two views, so averaging P's gradient over ranks is
exactly what DDP does with parameter gradients.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.gcl.unimodal import build_unimodal_loss

WORLD, LOCAL_B, DIM, NUM_SAMPLES, STEPS = 2, 4, 6, 12, 3
CASES = [("dcl", {"temp": 0.1, "gamma": 0.9}), ("dcl", {"temp": 0.2, "gamma": 0.4}), ("simclr", {"temp": 0.1})]
# duplicates within a rank (3 on rank 0) and across ranks (9, 5), as DistributedSampler padding produces
IDS = [torch.arange(8), torch.tensor([3, 9, 3, 10, 11, 0, 9, 5]), torch.tensor([5, 1, 7, 2, 5, 8, 6, 1])]


def step_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(200 + step)
    return torch.randn(WORLD * LOCAL_B, 2 * DIM, generator=g, dtype=torch.float64), IDS[step]


def run_case(name: str, kw: dict, rank: int, world: int) -> dict:
    """STEPS steps of loss `name` on this rank's rows; DDP-averaged gradients of P and the final state."""
    loss = build_unimodal_loss(name, NUM_SAMPLES, **kw).double()
    b = WORLD * LOCAL_B // world
    rows = slice(rank * b, (rank + 1) * b)
    result: dict = {"grad": []}
    for step in range(STEPS):
        loss.set_epoch(step, STEPS)
        p_full, ids = step_data(step)
        p_full.requires_grad_()
        local = p_full[rows]
        out = loss(F.normalize(local[:, :DIM], dim=1), F.normalize(local[:, DIM:], dim=1), ids[rows])
        (grad,) = torch.autograd.grad(out.loss, [p_full])
        if world > 1:
            dist.all_reduce(grad)
            grad /= world
        result["grad"].append(grad)
    result["state"] = {k: v.clone() for k, v in loss.state_dict().items()}
    return result


def worker(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        torch.save([run_case(name, kw, rank, world) for name, kw in CASES], f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
