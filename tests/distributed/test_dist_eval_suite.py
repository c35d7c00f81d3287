"""The probe (linear, k-NN, clustering) and text families on 2 gloo ranks report the single-process numbers."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp

import dist_suite_worker
from rendezvous import file_rendezvous


def _evaluate(world: int, shapes, words, out) -> list[dict]:
    out.mkdir()
    mp.spawn(dist_suite_worker.evaluate, args=(world, file_rendezvous(out), str(shapes), str(words), str(out)),
             nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def test_two_ranks_give_the_single_process_suite_metrics(shapes, tmp_path):
    words = tmp_path / "words.csv"
    words.write_text("".join(f"{a};{b};{s}\n" for a, b, s in [("red", "blue", 3), ("circle", "square", 5),
                                                             ("red", "circle", 1), ("star", "triangle", 6),
                                                             ("green", "yellow", 4), ("blue", "star", 2)]))
    (single,) = _evaluate(1, shapes, words, tmp_path / "w1")
    assert set(single) == {"linear_zs_top1", "linear_zs_best_top1", "knn_zs_top1", "cluster_zs_ami",
                           "cluster_zs_nmi", "cluster_zs_ari", "wordsim_tiny", "lee_pearson", "lee_spearman"}
    for result in _evaluate(2, shapes, words, tmp_path / "w2"):
        assert result == single
