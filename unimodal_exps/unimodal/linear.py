"""Linear evaluation: a linear classifier on frozen pre-trained features (seed/MoCo-v3 protocol).

SGD with momentum, no weight decay by default, lr = base·batch/256 with a per-epoch cosine decay; the
classifier starts at N(0, 0.01) weights and zero bias; the backbone stays in eval mode. Accuracy is
computed on every rank's strided share of the validation set and summed over ranks (no padding).
With `--cache-features` the features of the centre-cropped images are computed once (sharded, then
gathered), and every rank trains the same classifier on them, identically seeded (no DDP needed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from engine.distributed import gather_shards, shard_range
from engine.metrics import topk_correct
from engine.runtime import autocast
from models.gcl.collectives import all_reduce_sum, rank_and_world

TOPK = (1, 5)


@dataclass
class ProbeConfig:
    """Per-process settings of the linear probe."""

    device: torch.device
    amp_dtype: torch.dtype | None
    batch_size: int    # per process
    workers: int


def new_classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """Linear layer with SogCLR's initialisation: N(0, 0.01) weights, zero bias."""
    head = nn.Linear(in_dim, num_classes)
    nn.init.normal_(head.weight, mean=0.0, std=0.01)
    nn.init.zeros_(head.bias)
    return head


def sgd_step(head: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor, labels: Tensor) -> Tensor:
    """One cross-entropy step of the linear head; the detached loss (no host sync)."""
    loss = F.cross_entropy(head(inputs), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def features(backbone: nn.Module, images: Tensor, config: ProbeConfig) -> Tensor:
    """Frozen backbone features of a batch (no gradient, autocast as configured, fp32 out)."""
    with torch.no_grad(), autocast(config.device, config.amp_dtype):
        return backbone(images.to(config.device, non_blocking=config.device.type == "cuda")).float()


def strided_loader(dataset: Dataset, config: ProbeConfig) -> DataLoader:
    """This rank's share rank, rank+W, … of `dataset`, in order (no padding: exact accuracy over ranks)."""
    rank, world_size = rank_and_world()
    return DataLoader(Subset(dataset, range(rank, len(dataset), world_size)), batch_size=config.batch_size,
                      shuffle=False, num_workers=config.workers, pin_memory=config.device.type == "cuda")


def evaluate(backbone: nn.Module, head: nn.Module, dataset: Dataset, config: ProbeConfig) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) of backbone + head over the whole `dataset`."""
    head.eval()
    correct = torch.zeros(len(TOPK), dtype=torch.float64, device=config.device)
    for images, labels, _ in strided_loader(dataset, config):
        logits = head(features(backbone, images, config))
        correct += topk_correct(logits, labels.to(config.device), TOPK)
    correct = all_reduce_sum(correct)
    return {f"top{k}": 100.0 * float(c) / len(dataset) for k, c in zip(TOPK, correct.tolist())}


def train_epoch(backbone: nn.Module, head: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                config: ProbeConfig) -> float:
    """One epoch of cross-entropy on frozen features (augmented images); returns the mean loss of this rank."""
    head.train()
    total, steps = torch.zeros((), device=config.device), 0
    for images, labels, _ in loader:
        total += sgd_step(head, optimizer, features(backbone, images, config), labels.to(config.device))
        steps += 1
    return float(total.item()) / max(steps, 1)


def cached_features(backbone: nn.Module, dataset: Dataset, config: ProbeConfig) -> tuple[Tensor, Tensor]:
    """(features [N, F], labels [N]) of the whole `dataset`, computed in rank shards and gathered on every rank."""
    shard = shard_range(len(dataset), align=config.batch_size)
    loader = DataLoader(Subset(dataset, shard), batch_size=config.batch_size, shuffle=False,
                        num_workers=config.workers, pin_memory=config.device.type == "cuda")
    feats, labels = [], []
    for images, target, _ in loader:
        feats.append(features(backbone, images, config))
        labels.append(target.to(config.device))
    dim = backbone.num_features
    local_f = torch.cat(feats) if feats else torch.empty(0, dim, device=config.device)
    local_y = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=config.device)
    align = config.batch_size
    return gather_shards(local_f, len(dataset), align), gather_shards(local_y, len(dataset), align)


def train_epoch_cached(head: nn.Module, feats: Tensor, labels: Tensor, optimizer: torch.optim.Optimizer,
                       batch_size: int, generator: torch.Generator) -> float:
    """One shuffled epoch over cached features (identical on every rank for the same generator state)."""
    head.train()
    order = torch.randperm(feats.shape[0], generator=generator).to(feats.device)
    total, steps = torch.zeros((), device=feats.device), 0
    for start in range(0, feats.shape[0], batch_size):
        idx = order[start:start + batch_size]
        total += sgd_step(head, optimizer, feats[idx], labels[idx])
        steps += 1
    return float(total.item()) / max(steps, 1)


def evaluate_cached(head: nn.Module, feats: Tensor, labels: Tensor, batch_size: int) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) of `head` on cached features (every rank holds them all)."""
    head.eval()
    correct = torch.zeros(len(TOPK), dtype=torch.float64, device=feats.device)
    with torch.no_grad():
        for start in range(0, feats.shape[0], batch_size):
            correct += topk_correct(head(feats[start:start + batch_size]), labels[start:start + batch_size], TOPK)
    return {f"top{k}": 100.0 * float(c) / feats.shape[0] for k, c in zip(TOPK, correct.tolist())}
