"""Optimisers (timm factory) and learning-rate schedules (timm schedulers) for the two-tower model.

Two schedule modes:
* `legacy` reproduces the ALBEF-family references (docs/losses.md §12, §14): warm-up in 100-iteration blocks inside
  epoch 0 (`--warmup_epochs` counts blocks), then one cosine value per epoch, g(m) at epoch m >= 1.
* `step` is a per-iteration schedule: linear warm-up over `--warmup_steps`, then cosine to `--min_lr`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2

LEGACY_WARMUP_BLOCK = 100  # iterations per warm-up step of the legacy schedule


@dataclass
class Optimizers:
    """The main optimiser and, when the loss has "own" parameter groups (TempNet's networks, FastCLIP v3's
    τ), a separate Adam over them whose learning rate the loss's `own_lr` rule sets at every epoch start."""

    main: torch.optim.Optimizer
    own: torch.optim.Optimizer | None = None
    own_lr: Callable[[float, int], float] | None = None

    def all(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.main, self.own) if opt is not None]

    def start_epoch(self, epoch: int) -> None:
        """Set each own group's lr to the loss's rule applied to the group's initial lr."""
        if self.own is not None and self.own_lr is not None:
            for group in self.own.param_groups:
                group["lr"] = self.own_lr(group["initial_lr"], epoch)


def create_optimizers(model: torch.nn.Module, loss_fn: torch.nn.Module, opt: str, lr: float, weight_decay: float,
                      momentum: float = 0.9, lr_temp_net: float = 6e-6) -> Optimizers:
    """Main optimiser over the model (no decay on biases and norms) plus the loss's parameter groups: "main"
    groups join it (at their own "lr" if they give one, scaled by the same schedule), "own" groups get a
    separate Adam (at their "lr", else `lr_temp_net`)."""
    groups = param_groups_weight_decay(model, weight_decay)
    own_groups = []
    for group in loss_fn.param_groups():
        group = dict(group)
        target = group.pop("optimizer", "main")
        if target not in ("main", "own"):
            raise ValueError(f"{type(loss_fn).__name__}: parameter group optimizer must be main or own, got {target!r}")
        (own_groups if target == "own" else groups).append(group)
    main = create_optimizer_v2(groups, opt=opt.lower(), lr=lr, weight_decay=weight_decay, momentum=momentum)
    if not own_groups:
        return Optimizers(main)
    own = torch.optim.Adam(own_groups, lr=lr_temp_net)
    for group in own.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return Optimizers(main, own, loss_fn.own_lr)


class LRSchedule:
    """Drives a timm scheduler with the legacy (block warm-up, per-epoch cosine) or per-step semantics."""

    def __init__(self, optimizer: torch.optim.Optimizer, mode: str, sched: str, epochs: int, steps_per_epoch: int,
                 lr_min: float, warmup_lr: float, warmup_epochs: int = 0, warmup_steps: int = 0,
                 decay_rate: float = 1.0):
        self.mode = mode
        self.warmup_epochs = warmup_epochs
        self.steps_per_epoch = steps_per_epoch
        if mode == "legacy":
            num, warmup = epochs, warmup_epochs
        elif mode == "step":
            warmup = min(warmup_steps, epochs * steps_per_epoch)
            num = max(epochs * steps_per_epoch - warmup, 1)
        else:
            raise ValueError(f"unknown lr schedule mode {mode!r} (choices: legacy, step)")
        self.scheduler, _ = create_scheduler_v2(optimizer, sched=sched, num_epochs=num, warmup_epochs=warmup,
                                                warmup_lr=warmup_lr, min_lr=lr_min, warmup_prefix=True,
                                                decay_rate=decay_rate, cycle_limit=1)
        if self.scheduler is not None:
            self.scheduler.step(0)

    def start_epoch(self, epoch: int) -> None:
        """Set the learning rate an epoch starts with (also what a resumed run needs)."""
        if self.scheduler is None:
            return
        if self.mode == "legacy":
            self.scheduler.step(epoch + self.warmup_epochs if epoch > 0 else 0)
        else:
            self.scheduler.step(epoch * self.steps_per_epoch)

    def resume_at(self, epoch: int, iterations_done: int = 0) -> None:
        """Set the learning rate of step `iterations_done` of `epoch`, as if `start_epoch` and the
        `after_step` calls of the steps before it had run (the schedule is a function of the position, so a
        mid-epoch resume needs no replay). `iterations_done = 0` is `start_epoch`."""
        self.start_epoch(epoch)
        if self.scheduler is None or iterations_done == 0:
            return
        if self.mode == "legacy":
            if epoch == 0:  # the last warm-up block boundary passed so far
                self.scheduler.step(min((iterations_done - 1) // LEGACY_WARMUP_BLOCK, self.warmup_epochs))
        else:
            self.scheduler.step(epoch * self.steps_per_epoch + iterations_done)

    def after_step(self, epoch: int, iteration: int) -> None:
        """Update after optimiser step `iteration` (0-based, within `epoch`)."""
        if self.scheduler is None:
            return
        if self.mode == "legacy":
            block, offset = divmod(iteration, LEGACY_WARMUP_BLOCK)
            if epoch == 0 and offset == 0 and block <= self.warmup_epochs:
                self.scheduler.step(block)
        else:
            self.scheduler.step(epoch * self.steps_per_epoch + iteration + 1)
