"""The four metrics of the ELEVATER image-classification benchmark (Li et al. 2022): accuracy, mean-per-class
accuracy, 11-point mAP (VOC2007) and ROC-AUC (Hateful Memes), all in percent, and which dataset reports which."""
from __future__ import annotations

import numpy as np
import torch

MEAN_PER_CLASS = ("caltech-101", "fgvc-aircraft", "oxford-flower-102", "oxford-iiit-pets")
MAP_11_POINT = ("voc-2007-classification",)
ROC_AUC = ("hateful-memes",)


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of [N, C] scores against [N] labels."""
    return 100.0 * float((scores.argmax(dim=1) == labels).float().mean())


def mean_per_class(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in `labels` of their top-1 recall (%)."""
    predictions = scores.argmax(dim=1)
    recalls = [float((predictions[labels == c] == c).float().mean()) for c in labels.unique().tolist()]
    return 100.0 * sum(recalls) / len(recalls)


def average_precision_11_point(scores: np.ndarray, targets: np.ndarray) -> float:
    """VOC2007 AP of one label: mean over recall thresholds 0, 0.1, …, 1 of the best precision at recall ≥ t."""
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / max(int(hits.sum()), 1)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def map_11_point(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Multi-label mean over labels of the 11-point AP (%), [N, C] scores against [N, C] 0/1 targets."""
    s, t = scores.double().numpy(), targets.numpy()
    return 100.0 * float(np.mean([average_precision_11_point(s[:, c], t[:, c]) for c in range(s.shape[1])]))


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Binary ROC-AUC (%) of the positive-class score ([N, 2] scores, or [N] positive scores)."""
    from sklearn.metrics import roc_auc_score

    positive = scores[:, 1] if scores.dim() == 2 else scores
    return 100.0 * float(roc_auc_score(labels.numpy(), positive.double().numpy()))


def dataset_metric(name: str, scores: torch.Tensor, labels: torch.Tensor) -> tuple[str, float]:
    """(metric name, value) that ELEVATER reports for dataset `name`."""
    if name in MEAN_PER_CLASS:
        return "mean_per_class", mean_per_class(scores, labels)
    if name in MAP_11_POINT:
        return "map11", map_11_point(scores, labels)
    if name in ROC_AUC:
        return "roc_auc", roc_auc(scores, labels)
    return "accuracy", accuracy(scores, labels)
