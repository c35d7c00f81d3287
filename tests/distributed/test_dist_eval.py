"""Evaluation split across 2 gloo ranks gives exactly the single-process metrics."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp

import dist_eval_worker
from rendezvous import file_rendezvous


def _evaluate(world: int, shapes, out) -> list[dict]:
    out.mkdir()
    mp.spawn(dist_eval_worker.evaluate, args=(world, file_rendezvous(out), str(shapes), str(out)), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_two_ranks_give_the_single_process_metrics(shapes, tmp_path):
    (single,) = _evaluate(1, shapes, tmp_path / "w1")
    ranks = _evaluate(2, shapes, tmp_path / "w2")
    assert [r["local_images"] for r in ranks] == [24, 16]  # the work was split (3 + 2 batches of 8)
    assert single["local_images"] == 40
    for result in ranks:
        assert result["metrics"] == single["metrics"]
        assert torch.equal(result["images"], single["images"])
        assert torch.equal(result["classifier"], single["classifier"])
    assert set(single["metrics"]) == {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10",
                                      "img_r_mean", "r_mean", "zeroshot_top1", "zeroshot_top5"}
    assert single["classifier"].shape == (32, 36)
