"""Linear probes, weighted k-NN and clustering on hand-built features (README "Evaluations")."""
import pytest
import torch

from engine.evals.image import (ProbeDiverged, clustering_scores, knn_top1, linear_probe_pytorch,
                                linear_probe_sklearn, stratified_halves)


def blobs(per_class: int = 20, classes: int = 3, dim: int = 8, spread: float = 0.05, seed: int = 0):
    """Well separated Gaussian blobs around orthogonal centres; (features, labels)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes] * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def test_knn_weights_votes_by_exp_similarity_over_temperature():
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.1]])
    # s = (0.995, 0.856, 0.656): at T = 0.07 one near neighbour of class 0 outweighs two of class 1 ...
    assert knn_top1(train, labels, test, torch.tensor([0]), k=3, temperature=0.07) == 100.0
    # ... while at a high temperature the votes are nearly counts and class 1 wins
    assert knn_top1(train, labels, test, torch.tensor([1]), k=3, temperature=100.0) == 100.0
    # k = 1: only the nearest point votes
    assert knn_top1(train, labels, torch.tensor([[0.5, 0.9]]), torch.tensor([1]), k=1) == 100.0


def test_probes_reach_100_percent_on_separable_data_and_chance_without_signal():
    train, train_labels = blobs(seed=0)
    test, test_labels = blobs(seed=1)
    result = linear_probe_pytorch(train, train_labels, test, test_labels, seed=0)
    assert result["top1"] == 100.0 and result["best_top1"] == 100.0
    assert linear_probe_sklearn(train, train_labels, test, test_labels, C=1.0)["top1"] == 100.0
    searched = linear_probe_sklearn(train, train_labels, test, test_labels, C=None)
    assert searched["top1"] == 100.0 and searched["C"] > 0
    few, few_labels = blobs(per_class=2, classes=6, seed=2)  # too few images for a stratified 80/20 split
    few_test, few_test_labels = blobs(per_class=2, classes=6, seed=3)
    assert linear_probe_sklearn(few, few_labels, few_test, few_test_labels, C=None)["top1"] == 100.0
    noise = torch.randn(60, 8, generator=torch.Generator().manual_seed(3))
    shuffled = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(4))
    assert linear_probe_pytorch(noise, shuffled, test, test_labels)["top1"] < 70.0


def test_pytorch_probe_reports_best_epoch_at_least_final_and_is_seeded():
    train, train_labels = blobs(spread=2.0, seed=5)
    test, test_labels = blobs(spread=2.0, seed=6)
    first = linear_probe_pytorch(train, train_labels, test, test_labels, seed=1, epochs=5)
    assert first == linear_probe_pytorch(train, train_labels, test, test_labels, seed=1, epochs=5)
    assert first["best_top1"] >= first["top1"]


def test_pytorch_probe_raises_instead_of_scoring_nan_logits():
    train, train_labels = blobs(seed=0)
    test, test_labels = blobs(seed=1)
    scaled = linear_probe_pytorch(train * 1e6, train_labels, test * 1e6, test_labels)  # large but finite: trains
    assert scaled["top1"] == 100.0 and scaled["loss_last"] < scaled["loss_first"]
    with pytest.raises(ProbeDiverged, match="non-finite"):  # overflows float32 in the first step
        linear_probe_pytorch(train * 1e30, train_labels, test * 1e30, test_labels)


def test_clustering_is_100_on_separated_blobs_and_near_0_for_random_labels():
    features, labels = blobs(per_class=30, classes=4)
    assert clustering_scores(features, labels) == pytest.approx({"ami": 100.0, "nmi": 100.0, "ari": 100.0})
    random_labels = torch.randint(0, 4, (120,), generator=torch.Generator().manual_seed(0))
    scores = clustering_scores(features, random_labels)
    assert abs(scores["ami"]) < 5 and abs(scores["ari"]) < 5


def test_stratified_halves_split_every_class_and_are_seeded():
    labels = torch.tensor([0] * 5 + [1] * 4 + [2] * 1)
    train, test = stratified_halves(labels, seed=0)
    assert sorted(train + test) == list(range(10))
    assert [int((labels[train] == c).sum()) for c in range(3)] == [3, 2, 1]
    assert (train, test) == stratified_halves(labels, seed=0)
    assert (train, test) != stratified_halves(labels, seed=1)
