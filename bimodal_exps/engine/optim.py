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
    τ), a separate Adam over them whose learning rate follows the loss's `own_lr(initial_lr, epoch)` rule."""

    main: torch.optim.Optimizer
    own: torch.optim.Optimizer | None = None
    own_lr: Callable[[float, int], float] | None = None

    def all(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.main, self.own) if opt is not None]


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
    """The learning rate of every parameter group as a function of the position (epoch, step) alone.

    `apply(epoch, iteration)` runs before each optimiser step (the training loop calls it between the
    forward and the backward pass of a step that is not skipped): the main optimiser's groups follow the timm
    schedule (legacy or per-step semantics), the "own" groups the loss's `own_lr(initial_lr, epoch)`. Nothing
    depends on the calls before, so a resumed run (at an epoch boundary or inside an epoch) needs no replay.
    """

    def __init__(self, optimizers: Optimizers, mode: str, sched: str, epochs: int, steps_per_epoch: int,
                 lr_min: float, warmup_lr: float, warmup_epochs: int = 0, warmup_steps: int = 0,
                 decay_rate: float = 1.0):
        self.optimizers = optimizers
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
        self.scheduler, _ = create_scheduler_v2(optimizers.main, sched=sched, num_epochs=num, warmup_epochs=warmup,
                                                warmup_lr=warmup_lr, min_lr=lr_min, warmup_prefix=True,
                                                decay_rate=decay_rate, cycle_limit=1)

    def position(self, epoch: int, iteration: int) -> int:
        """The timm scheduler's time index for step `iteration` (0-based) of `epoch`.

        `step`: the global step. `legacy` (ALBEF family): in epoch 0 the warm-up advances one block after
        steps 0, 100, 200, … (`--warmup_epochs` blocks at most), so step i uses block ⌊(i − 1)/100⌋; from
        epoch 1 on one cosine value per epoch, at index epoch + warmup_epochs.
        """
        if self.mode == "step":
            return epoch * self.steps_per_epoch + iteration
        if epoch > 0:
            return epoch + self.warmup_epochs
        return min(max(iteration - 1, 0) // LEGACY_WARMUP_BLOCK, self.warmup_epochs)

    def apply(self, epoch: int, iteration: int) -> None:
        """Set the learning rate of every parameter group for step `iteration` of `epoch`."""
        if self.scheduler is not None:
            self.scheduler.step(self.position(epoch, iteration))
        own, own_lr = self.optimizers.own, self.optimizers.own_lr
        if own is not None and own_lr is not None:
            for group in own.param_groups:
                group["lr"] = own_lr(group["initial_lr"], epoch)
