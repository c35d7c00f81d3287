"""ITRA's SimCSE term (docs/losses.md §15.11): formula, 2-rank gloo equality with one process, and the clip.py run."""
from __future__ import annotations

import json
import shlex

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from models.objectives.simcse import simcse_loss
from rendezvous import file_rendezvous, gloo_group

WORLD, B, D = 2, 8, 6


def views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return (F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1),
            F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1))


def reference(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    logits = first @ second.T / 0.05
    return -torch.stack([logits[i, i] - torch.logsumexp(logits[i], 0) for i in range(B)]).mean()


def test_simcse_matches_the_formula_and_identical_views_are_near_minimal():
    first, second = views()
    assert torch.allclose(simcse_loss(first, second), reference(first, second), atol=1e-12)
    assert simcse_loss(first, first) < simcse_loss(first, second)


def _grads(first: torch.Tensor, second: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
    loss = simcse_loss(a[rows], b[rows])
    return torch.autograd.grad(loss, (a, b))


def _worker(rank: int, init_method: str, out: str) -> None:
    with gloo_group(rank, WORLD, init_method):
        b = B // WORLD
        grads = _grads(*views(), slice(rank * b, (rank + 1) * b))
        averaged = []
        for g in grads:  # DDP's average of the parameter (here: input) gradients
            g = g.clone()
            dist.all_reduce(g)
            averaged.append(g / WORLD)
        torch.save(averaged, f"{out}/rank{rank}.pt")


def test_two_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(file_rendezvous(tmp_path), str(tmp_path)), nprocs=WORLD, join=True)
    single = _grads(*views(), slice(0, B))
    for rank in range(WORLD):
        for got, want in zip(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True), single, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def shapes(build_shapes):
    return build_shapes("shapes_small", 128, 20, 1, 32)


def test_clip_py_adds_the_weighted_term(shapes, tmp_path):
    import clip
    command = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --output_dir {tmp_path} "
               "--ita_type simreg --w_simcse 0.5 --image_encoder test_vit --image_res 32 --text_encoder Transformer "
               "--text_width 32 --text_heads 2 --text_layers 1 --context_length 24 --embed_dim 32 --workers 0 "
               "--val_workers 0 --no-progress --batch_size_train 16 --warmup_epochs 0 --zs_dataset none --epochs 1")
    assert clip.main(shlex.split(command)) == 0
    record = json.loads((tmp_path / "log.txt").read_text().splitlines()[-1])
    assert record["train_simcse"] > 0
    assert record["train_loss"] == pytest.approx(record["train_objective"] + 0.5 * record["train_simcse"], rel=1e-5)
