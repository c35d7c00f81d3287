"""One training epoch: learning rates, AMP forward, non-finite guard, backward, optimiser steps, progress bar.

An epoch may start after its first k steps (mid-epoch resume): the loader then yields only the remaining
batches. Augmentations are seeded per sample by the data layer (`dataset.sample_rng`), whatever the number of
DataLoader workers, and creating the loader's iterator leaves the global RNG untouched; a resumed epoch then
restores the global RNG state saved after step k (any other random draws of the steps).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from dataset.collate import Batch
from dataset.sample_rng import iter_keeping_rng
from engine.accum import cached_forward
from engine.checkpoint import restore_rng_state
from engine.logger import RunningMeans
from engine.optim import LRSchedule, Optimizers
from engine.preemption import Preempted
from engine.runtime import autocast, finite_on_every_rank


@dataclass
class StepConfig:
    """Per-step settings of the training loop."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # None: fp32
    grad_clip: float = 0.0
    log_every: int = 50
    show_progress: bool = True
    max_consecutive_skips: int = 100
    accum_freq: int = 1  # micro-batches per optimiser step, by gradient caching (`engine.accum`)
    stop_signal: Callable[[], int] | None = None  # asked at every step boundary; non-zero: stop (preemption)
    on_log: Callable[[int, dict[str, float]], None] | None = None  # (global step, means of the last log_every steps)


@dataclass(frozen=True)
class EpochStart:
    """Where an epoch begins: after `iteration` steps, with the RNG state saved then (None: fresh epoch)."""

    iteration: int = 0
    rng: dict[str, Any] | None = None


class TooManySkippedSteps(RuntimeError):
    """`max_consecutive_skips` non-finite losses in a row; `iteration` steps of `epoch` are done (the last
    one skipped). The trainer saves the state before raising it on and sets `checkpoint`."""

    def __init__(self, count: int, epoch: int, iteration: int) -> None:
        super().__init__(count, epoch, iteration)
        self.count, self.epoch, self.iteration = count, epoch, iteration
        self.checkpoint: str | None = None

    def __str__(self) -> str:
        text = (f"{self.count} consecutive non-finite (NaN/Inf) losses up to epoch {self.epoch}, iteration "
                f"{self.iteration - 1}; lower --lr, set --grad_clip or check the data")
        if self.checkpoint:
            text += f"; the state before them is saved in {self.checkpoint} (--resume continues after them)"
        return text


def _to_device(batch: Batch, device: torch.device) -> Batch:
    non_blocking = device.type == "cuda"
    return Batch(batch.images.to(device, non_blocking=non_blocking),
                 {k: v.to(device, non_blocking=non_blocking) for k, v in batch.texts.items()},
                 batch.ids.to(device, non_blocking=non_blocking))


def _backward_and_step(loss: torch.Tensor, optimizers: Optimizers, scaler: torch.amp.GradScaler,
                       params: list[torch.nn.Parameter], grad_clip: float,
                       backward: Callable[[torch.Tensor], None] = torch.Tensor.backward) -> None:
    """Backward pass (`backward` of the scaled loss), optional gradient clipping, and one step of every
    optimiser (through the scaler)."""
    backward(scaler.scale(loss))
    if grad_clip > 0:
        scaler.unscale_(optimizers.main)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    for opt in optimizers.all():
        scaler.step(opt)
    scaler.update()


def train_one_epoch(task: torch.nn.Module, loader: Iterable, optimizers: Optimizers, schedule: LRSchedule,
                    scaler: torch.amp.GradScaler, epoch: int, config: StepConfig, start: EpochStart = EpochStart(),
                    on_step_end: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Train for one pass over `loader` (the steps after `start.iteration`); return the averaged loss/stats of
    the steps run here (synchronised over ranks). `on_step_end(epoch, iterations_done)` runs after every
    step, skipped ones included; a stop request is honoured right after it."""
    task.train()
    params = [p for group in optimizers.main.param_groups for p in group["params"]]
    meters, interval = RunningMeans(), RunningMeans()
    skipped = torch.zeros((), device=config.device)
    consecutive_skips = 0
    batches = iter_keeping_rng(loader)
    if start.rng is not None:
        restore_rng_state(start.rng)
    progress = tqdm(batches, desc=f"epoch {epoch}", total=start.iteration + len(loader), initial=start.iteration,
                    disable=not config.show_progress, dynamic_ncols=True, mininterval=1.0)
    samples, started = 0, time.perf_counter()
    for iteration, batch in enumerate(progress, start=start.iteration):
        images, tokens, ids = _to_device(batch, config.device)
        backward = torch.Tensor.backward
        if config.accum_freq > 1:
            out, backward = cached_forward(task, images, tokens, ids, config.accum_freq, config.device,
                                           config.amp_dtype)
        else:
            with autocast(config.device, config.amp_dtype):
                out = task(images, tokens, ids)
        for opt in optimizers.all():
            opt.zero_grad(set_to_none=True)
        if finite_on_every_rank(out.loss):
            consecutive_skips = 0
            # set here, right after the host has waited for the forward: an lr rule that reads the device
            # (FastCLIP v3's τ threshold) then stalls nothing
            schedule.apply(epoch, iteration)
            _backward_and_step(out.loss, optimizers, scaler, params, config.grad_clip, backward)
            meters.update({"loss": out.loss, **out.stats})
            samples += images.shape[0]
            if config.on_log is not None:
                interval.update({"loss": out.loss, **out.stats})
                if (iteration + 1) % config.log_every == 0:
                    lr = optimizers.main.param_groups[0]["lr"]
                    config.on_log(epoch * (start.iteration + len(loader)) + iteration + 1,
                                  {**interval.means(), "lr": lr})
                    interval = RunningMeans()
            if config.show_progress and (iteration % config.log_every == 0 or iteration == len(progress) - 1):
                progress.set_postfix(loss=f"{out.loss.item():.4f}",
                                     lr=f"{optimizers.main.param_groups[0]['lr']:.3g}",
                                     samples_s=f"{samples / (time.perf_counter() - started):.1f}")
        else:
            skipped += 1
            consecutive_skips += 1
            if consecutive_skips >= config.max_consecutive_skips:
                raise TooManySkippedSteps(consecutive_skips, epoch, iteration + 1)
        if on_step_end is not None:
            on_step_end(epoch, iteration + 1)
        if config.stop_signal is not None and (signum := config.stop_signal()):
            raise Preempted(signum, epoch, iteration + 1)
    progress.close()
    stats = meters.means(synchronize=True)
    stats["skipped_steps"] = float(skipped.item())
    stats["lr"] = optimizers.main.param_groups[0]["lr"]
    stats["samples_per_s"] = samples / max(time.perf_counter() - started, 1e-9)
    return stats
