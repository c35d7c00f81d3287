"""One pre-training epoch: per-iteration learning rate, autocast forward, non-finite guard, scaled LARS step."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import torch

from dataset.sample_rng import iter_keeping_rng
from engine.logger import RunningMeans
from engine.runtime import autocast, finite_on_every_rank
from unimodal.schedule import set_lr, warmup_cosine


@dataclass
class LoopConfig:
    """Settings of the training loop."""

    device: torch.device
    amp_dtype: torch.dtype | None
    peak_lr: float
    warmup_epochs: int
    epochs: int
    print_freq: int
    verbose: bool


def train_one_epoch(task: torch.nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, epoch: int, config: LoopConfig) -> dict[str, float]:
    """Train one pass over `loader` ((views, label, index) batches); return the epoch means over ranks."""
    task.train()
    meters = RunningMeans()
    skipped = torch.zeros((), device=config.device)
    iterations = len(loader)
    start = time.perf_counter()
    non_blocking = config.device.type == "cuda"
    lr = 0.0
    for i, ((view_a, view_b), _, ids) in enumerate(iter_keeping_rng(loader)):
        lr = warmup_cosine(config.peak_lr, epoch + i / iterations, config.warmup_epochs, config.epochs)
        set_lr(optimizer, lr)
        view_a = view_a.to(config.device, non_blocking=non_blocking)
        view_b = view_b.to(config.device, non_blocking=non_blocking)
        with autocast(config.device, config.amp_dtype):
            out = task(view_a, view_b, ids.to(config.device, non_blocking=non_blocking))
        optimizer.zero_grad(set_to_none=True)
        if not finite_on_every_rank(out.loss):
            skipped += 1
            continue
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        meters.update({"loss": out.loss, **out.stats})
        if config.verbose and (i % config.print_freq == 0 or i == iterations - 1):
            print(f"Epoch: [{epoch}][{i:>{len(str(iterations))}}/{iterations}]  lr {lr:.4e}  "
                  f"loss {out.loss.item():.4f}  {(time.perf_counter() - start) / (i + 1):.3f} s/it", flush=True)
    stats = meters.means(synchronize=True)
    stats["skipped_steps"] = float(skipped.item())
    stats["lr"] = lr
    stats["epoch_seconds"] = time.perf_counter() - start
    return stats
