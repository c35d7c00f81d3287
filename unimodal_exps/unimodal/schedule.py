"""Learning rates: batch-size scaling and the per-iteration warm-up + half-cosine schedule (seed recipe)."""
from __future__ import annotations

import math

import torch

SCALINGS = ("sqrt", "linear")


def scaled_lr(base_lr: float, batch_size: int, scaling: str) -> float:
    """`sqrt`: base·√batch (SogCLR default, 0.075·√256 = 1.2); `linear`: base·batch/256."""
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if scaling == "linear":
        return base_lr * batch_size / 256
    raise ValueError(f"learning-rate scaling must be one of {SCALINGS}, got {scaling!r}")


def warmup_cosine(peak_lr: float, progress: float, warmup_epochs: float, epochs: float) -> float:
    """lr at fractional epoch `progress`: linear from 0 over the warm-up, then half-cosine down to 0."""
    if progress < warmup_epochs:
        return peak_lr * progress / warmup_epochs
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * (progress - warmup_epochs) / (epochs - warmup_epochs)))


def cosine(peak_lr: float, epoch: int, epochs: int) -> float:
    """Per-epoch half-cosine without warm-up (linear evaluation, MoCo v3 lincls)."""
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
