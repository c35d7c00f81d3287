"""ELEVATER's four metrics against hand-computed values."""
import pytest
import torch

from engine.evals.elevater import accuracy, average_precision_11_point, dataset_metric, map_11_point, mean_per_class, roc_auc

SCORES = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
LABELS = torch.tensor([0, 0, 1, 1])  # predictions 0, 0, 1, 0


def test_accuracy_and_mean_per_class():
    assert accuracy(SCORES, LABELS) == 75.0
    assert mean_per_class(SCORES, LABELS) == 75.0  # (2/2 + 1/2) / 2
    unbalanced = torch.tensor([0, 0, 0, 1])  # predictions right for rows 0, 1: class 0 recall 2/3, class 1 0/1
    assert accuracy(SCORES, unbalanced) == 50.0
    assert mean_per_class(SCORES, unbalanced) == pytest.approx(100 / 3)


def test_11_point_average_precision_by_hand():
    # ranking: hit, miss, hit -> precision 1 at recall 0.5, 2/3 at recall 1
    ap = average_precision_11_point(torch.tensor([0.9, 0.5, 0.3]).numpy(), torch.tensor([1, 0, 1]).numpy())
    assert ap == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    targets = torch.tensor([[1, 0], [0, 1], [1, 1]])
    scores = torch.tensor([[0.9, 0.1], [0.5, 0.8], [0.3, 0.7]])
    # label 0 as above; label 1 ranks its two positives first: AP 1
    assert map_11_point(scores, targets) == pytest.approx(100 * ((6 + 5 * 2 / 3) / 11 + 1.0) / 2)


def test_roc_auc_by_hand_and_dataset_metric_choice():
    # positives score 0.7, 0.4 vs negatives 0.1, 0.2: all 4 pairs ordered -> 100
    assert roc_auc(SCORES, LABELS) == 100.0
    assert roc_auc(torch.tensor([0.7, 0.15, 0.1, 0.2]), LABELS[[2, 3, 0, 1]]) == 75.0  # 0.15 < 0.2 only
    assert dataset_metric("oxford-iiit-pets", SCORES, LABELS)[0] == "mean_per_class"
    assert dataset_metric("cifar-10", SCORES, LABELS) == ("accuracy", 75.0)
    assert dataset_metric("hateful-memes", SCORES, LABELS) == ("roc_auc", 100.0)
