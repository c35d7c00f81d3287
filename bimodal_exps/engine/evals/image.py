"""Image-side evaluations on frozen features: linear probe, weighted k-NN and k-means clustering (README
"Evaluations").

The functions take feature matrices and integer labels (CPU tensors), so they are independent of how the
features were computed; `backbone_features` computes them over this rank's shard and gathers them, like
`engine.evaluation.encode_images` does for embeddings.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from engine.distributed import gather_shards, shard_range

SKLEARN_C_GRID = (0.01, 0.1, 1, 2, 4, 8, 10, 16, 64, 100, 1000)


@torch.no_grad()
def backbone_features(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
                      workers: int, embeddings: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 CPU features of every image, labels): the tower output, or with `embeddings` the l2-normalised head
    output; each rank encodes its shard of whole batches, so the gathered rows equal a single process's."""
    model.eval()
    loader = DataLoader(Subset(dataset, shard_range(len(dataset), batch_size)), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    encode = model.encode_image if embeddings else model.encode_image_backbone
    features, labels = [], []
    for images, label in loader:
        features.append(encode(images.to(device, non_blocking=True)).float())
        labels.append(torch.as_tensor(label, device=device))
    if features:
        local, local_labels = torch.cat(features), torch.cat(labels)
    else:  # a rank without rows still takes part in the gather with the feature width
        width = encode(dataset[0][0].unsqueeze(0).to(device)).shape[1]
        local, local_labels = torch.empty((0, width), device=device), torch.empty((0,), dtype=torch.long, device=device)
    return (gather_shards(local, len(dataset), batch_size).cpu(),
            gather_shards(local_labels, len(dataset), batch_size).cpu())


def knn_top1(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
             k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Weighted k-NN accuracy (%) as in InstDisc/DINO: the k most cosine-similar training points vote with
    weight exp(s/T); the class with the largest vote wins."""
    train, test = torch.nn.functional.normalize(train.float(), dim=1), torch.nn.functional.normalize(test.float(), dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(test), chunk):
        sims, index = (test[start:start + chunk] @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes).scatter_add_(1, train_labels[index], (sims / temperature).exp())
        correct += int((votes.argmax(dim=1) == test_labels[start:start + chunk]).sum())
    return 100.0 * correct / len(test)


class ProbeDiverged(ArithmeticError):
    """The SGD probe's loss or test logits became non-finite: its accuracy would be argmax of NaN, not a result."""


def linear_probe_pytorch(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                         test_labels: torch.Tensor, seed: int = 0, epochs: int = 100, lr: float = 0.004,
                         batch_size: int = 1024) -> dict[str, float]:
    """ITRA's SGD probe: one Linear layer (N(0, 0.01²) weights) on raw features, momentum 0.9, no weight decay,
    cosine-annealed per epoch to 0, batches shuffled with `seed`. Returns final and best-epoch test accuracy (%)
    and the mean training loss of the first and last epoch; raises ProbeDiverged on a non-finite loss or logit."""
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    head = torch.nn.Linear(train.shape[1], num_classes)
    torch.nn.init.normal_(head.weight, std=0.01, generator=generator)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0.0)
    best = final = 0.0
    epoch_losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for start in range(0, len(train), batch_size):
            batch = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(head(train[batch]), train_labels[batch])
            if not torch.isfinite(loss):
                raise ProbeDiverged(f"non-finite training loss in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item() * len(batch))
        epoch_losses.append(sum(losses) / len(train))
        scheduler.step()
        with torch.no_grad():
            logits = head(test)
            if not torch.isfinite(logits).all():
                raise ProbeDiverged(f"non-finite test logits after epoch {epoch + 1}")
            final = 100.0 * float((logits.argmax(dim=1) == test_labels).float().mean())
        best = max(best, final)
    return {"top1": final, "best_top1": best, "loss_first": epoch_losses[0], "loss_last": epoch_losses[-1]}


def linear_probe_sklearn(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                         test_labels: torch.Tensor, C: float | None = None, seed: int = 0) -> dict[str, float]:
    """Logistic regression (scikit-learn) on raw features; without `C`, C is chosen from `SKLEARN_C_GRID` on a
    seeded stratified 80/20 split of train (not on test), then refit on all of train. Returns top-1 (%) and C."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x_train, y_train, x_test, y_test = (t.numpy() for t in (train.float(), train_labels, test.float(), test_labels))
    with warnings.catch_warnings():  # small probe sets have many classes per sample: not a regression problem
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        if C is None:
            counts = np.bincount(y_train)
            present = counts[counts > 0]
            # stratify when every class can appear on both sides, else a plain seeded split (tiny sets)
            stratify = y_train if present.min() >= 2 and int(0.2 * len(y_train)) >= len(present) else None
            x_fit, x_val, y_fit, y_val = train_test_split(x_train, y_train, test_size=0.2, random_state=seed,
                                                          stratify=stratify)
            warnings.simplefilter("ignore", ConvergenceWarning)  # 50 iterations per candidate: a coarse search
            scores = [LogisticRegression(C=c, max_iter=50, random_state=0).fit(x_fit, y_fit).score(x_val, y_val)
                      for c in SKLEARN_C_GRID]
            C = SKLEARN_C_GRID[int(np.argmax(scores))]
            warnings.simplefilter("default", ConvergenceWarning)
        classifier = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(x_train, y_train)
    return {"top1": 100.0 * classifier.score(x_test, y_test), "C": float(C)}


def clustering_scores(features: torch.Tensor, labels: torch.Tensor, num_clusters: int | None = None,
                      seed: int = 0) -> dict[str, float]:
    """k-means (k = number of classes, 5 restarts of ≤ 100 iterations, lowest inertia kept) on l2-normalised
    features; AMI, NMI (arithmetic) and ARI of the clusters against the labels, ×100."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    y = labels.numpy()
    k = num_clusters or len(np.unique(y))
    x = torch.nn.functional.normalize(features.float(), dim=1).numpy()
    clusters = KMeans(n_clusters=k, n_init=5, max_iter=100, random_state=seed).fit_predict(x)
    return {"ami": 100.0 * adjusted_mutual_info_score(y, clusters),
            "nmi": 100.0 * normalized_mutual_info_score(y, clusters),
            "ari": 100.0 * adjusted_rand_score(y, clusters)}


def probe_split_problem(train_labels: torch.Tensor, test_labels: torch.Tensor) -> str | None:
    """Why a (train, test) split cannot give a linear-probe or k-NN accuracy, or None when it can: both need
    a test image and training images of at least two classes (one class is a trivial 100 %)."""
    if len(test_labels) == 0:
        return "no test images"
    classes = len(train_labels.unique())
    return None if classes >= 2 else f"training images of {classes} class{'es' if classes != 1 else ''} (needs 2)"


def clustering_problem(labels: torch.Tensor) -> str | None:
    """Why k-means with k = classes cannot be scored against `labels`, or None when it can: it needs two classes
    and more images than classes (one image per class is a trivial perfect clustering)."""
    classes = len(labels.unique())
    if classes < 2:
        return f"{classes} class{'es' if classes != 1 else ''} (needs 2)"
    return None if len(labels) > classes else f"one image per class ({classes} images)"


def stratified_halves(labels: torch.Tensor, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, test) indices: per class a seeded permutation, the first half (rounded up) for train — a probe
    split of a set that has no train split of its own (the zero-shot set). A class of one image is train only."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in labels.unique().tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        half = math.ceil(len(members) / 2)
        train += members[:half]
        test += members[half:]
    return sorted(train), sorted(test)
