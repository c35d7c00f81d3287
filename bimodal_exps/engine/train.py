"""One training epoch: AMP forward, non-finite guard, backward, optimiser/scheduler steps, progress bar."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from engine.distributed import world
from engine.logger import RunningMeans
from engine.optim import LRSchedule, Optimizers, tempnet_lr
from engine.preemption import Preempted


@dataclass
class StepConfig:
    """Per-step settings of the training loop."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # None: fp32
    grad_clip: float = 0.0
    lr_temp_net: float = 6e-6
    log_every: int = 50
    show_progress: bool = True
    max_consecutive_skips: int = 100
    stop_signal: Callable[[], int] | None = None  # asked at every step boundary; non-zero: stop (preemption)


class TooManySkippedSteps(RuntimeError):
    """Raised after `max_consecutive_skips` non-finite losses in a row."""


def _to_device(batch, device: torch.device):
    images, tokens, _, pair_ids = batch
    non_blocking = device.type == "cuda"
    return (images.to(device, non_blocking=non_blocking),
            {k: v.to(device, non_blocking=non_blocking) for k, v in tokens.items()},
            pair_ids.to(device, non_blocking=non_blocking))


def _finite_on_every_rank(loss: torch.Tensor) -> bool:
    """True when the loss is finite on all ranks: every rank must take the same skip decision (no DDP hang)."""
    finite = torch.isfinite(loss.detach()).float()
    if world()[1] > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def train_one_epoch(task: torch.nn.Module, loader: Iterable, optimizers: Optimizers, schedule: LRSchedule,
                    scaler: torch.amp.GradScaler, epoch: int, config: StepConfig) -> dict[str, float]:
    """Train for one pass over `loader`; return the epoch's averaged loss/stats (synchronised over ranks)."""
    task.train()
    if optimizers.tempnet is not None:
        for group in optimizers.tempnet.param_groups:
            group["lr"] = tempnet_lr(config.lr_temp_net, epoch)
    params = [p for group in optimizers.main.param_groups for p in group["params"]]
    meters = RunningMeans()
    skipped = torch.zeros((), device=config.device)
    consecutive_skips = 0
    progress = tqdm(loader, desc=f"epoch {epoch}", disable=not config.show_progress, dynamic_ncols=True,
                    mininterval=1.0)
    samples, start = 0, time.perf_counter()
    for iteration, batch in enumerate(progress):
        if config.stop_signal is not None and (signum := config.stop_signal()):
            raise Preempted(signum, epoch, iteration)
        images, tokens, ids = _to_device(batch, config.device)
        with torch.autocast(config.device.type, dtype=config.amp_dtype or torch.float32,
                            enabled=config.amp_dtype is not None):
            out = task(images, tokens, ids)
        for opt in optimizers.all():
            opt.zero_grad(set_to_none=True)
        if not _finite_on_every_rank(out.loss):
            skipped += 1
            consecutive_skips += 1
            if consecutive_skips >= config.max_consecutive_skips:
                raise TooManySkippedSteps(f"{consecutive_skips} consecutive non-finite losses at epoch {epoch}, "
                                          f"iteration {iteration}")
            continue
        consecutive_skips = 0
        scaler.scale(out.loss).backward()
        if config.grad_clip > 0:
            scaler.unscale_(optimizers.main)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        for opt in optimizers.all():
            scaler.step(opt)
        scaler.update()
        schedule.after_step(epoch, iteration)
        meters.update({"loss": out.loss, **out.stats})
        samples += images.shape[0]
        if config.show_progress and (iteration % config.log_every == 0 or iteration == len(progress) - 1):
            progress.set_postfix(loss=f"{out.loss.item():.4f}", lr=f"{optimizers.main.param_groups[0]['lr']:.3g}",
                                 samples_s=f"{samples / (time.perf_counter() - start):.1f}")
    progress.close()
    stats = meters.means(synchronize=True)
    stats["skipped_steps"] = float(skipped.item())
    stats["lr"] = optimizers.main.param_groups[0]["lr"]
    stats["samples_per_s"] = samples / max(time.perf_counter() - start, 1e-9)
    return stats
