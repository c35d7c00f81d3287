"""Optimisers (timm factory) and learning-rate schedules (timm schedulers) for the two-tower model.

Two schedule modes:
* `legacy` reproduces the ALBEF-family references (docs/losses.md §12, §14): warm-up in 100-iteration blocks inside
  epoch 0 (`--warmup_epochs` counts blocks), then one cosine value per epoch, g(m) at epoch m >= 1.
* `step` is a per-iteration schedule: linear warm-up over `--warmup_steps`, then cosine to `--min_lr`.

With a `TowerSchedule` (ProtoCLIP's asymmetric schedule, docs/losses.md §15.10) the image side and the other
parameters run the same kind of schedule over their own windows of epochs, at lr 0 outside them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2

LEGACY_WARMUP_BLOCK = 100  # iterations per warm-up step of the legacy schedule
IMAGE_SIDE = "image_side"  # tag of the main optimiser's groups over the image tower and its head


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
                      momentum: float = 0.9, lr_temp_net: float = 6e-6,
                      image_side: Iterable[torch.nn.Parameter] | None = None,
                      lr_text: float | None = None) -> Optimizers:
    """Main optimiser over the model (no decay on biases and norms) plus the loss's parameter groups: "main"
    groups join it (at their own "lr" if they give one, scaled by the same schedule), "own" groups get a
    separate Adam (at their "lr", else `lr_temp_net`).

    With `image_side` (the asymmetric schedule) the model's groups are split: those parameters get groups tagged
    `IMAGE_SIDE` at `lr`, every other main group starts at `lr_text` (default `lr`) unless it gives its own.
    """
    groups = param_groups_weight_decay(model, weight_decay)
    text_lr = lr if lr_text is None else lr_text
    if image_side is not None:
        groups = _split_image_side(groups, {id(p) for p in image_side}, lr, text_lr)
    own_groups = []
    for group in loss_fn.param_groups():
        group = dict(group)
        target = group.pop("optimizer", "main")
        if target not in ("main", "own"):
            raise ValueError(f"{type(loss_fn).__name__}: parameter group optimizer must be main or own, got {target!r}")
        if target == "main" and image_side is not None:
            group.setdefault("lr", text_lr)
        (own_groups if target == "own" else groups).append(group)
    main = create_optimizer_v2(groups, opt=opt.lower(), lr=lr, weight_decay=weight_decay, momentum=momentum)
    if not own_groups:
        return Optimizers(main)
    own = torch.optim.Adam(own_groups, lr=lr_temp_net)
    for group in own.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return Optimizers(main, own, loss_fn.own_lr)


def _split_image_side(groups: list[dict], image_ids: set[int], lr: float, lr_text: float) -> list[dict]:
    """Each weight-decay group as an `IMAGE_SIDE` group at `lr` and a group of the rest at `lr_text` (both kept
    when empty, so the layout depends on the flags alone and a resumed optimiser state matches it)."""
    split = []
    for group in groups:
        params = group["params"]
        split.append({**group, "params": [p for p in params if id(p) in image_ids], "lr": lr, IMAGE_SIDE: True})
        split.append({**group, "params": [p for p in params if id(p) not in image_ids], "lr": lr_text})
    return split


@dataclass(frozen=True)
class TowerSchedule:
    """Windows of 0-based epochs for the asymmetric schedule: the image side trains during [0, image_end) (its
    warm-up + cosine compressed into them), every other main group during [text_start, text_end)."""

    image_end: int
    text_start: int
    text_end: int

    @classmethod
    def from_flags(cls, epochs: int, lit_start_epoch: int = 0, text_start_epoch: int = 0,
                   text_end_epoch: int | None = None) -> TowerSchedule:
        """`--lit_start_epoch E` > 0 ends the image side's window at epoch E − 1 (0 = the whole run);
        `--text_end_epoch` defaults to `epochs`."""
        image_end = lit_start_epoch - 1 if lit_start_epoch > 0 else epochs
        return cls(image_end, text_start_epoch, epochs if text_end_epoch is None else text_end_epoch)


class _Groups:
    """The main optimiser's parameter groups that `select` picks, read afresh on every access: loading an
    optimiser state replaces the group dicts, and a timm scheduler only reads `param_groups`."""

    def __init__(self, optimizer: torch.optim.Optimizer, select: Callable[[dict], bool]):
        self.optimizer, self.select = optimizer, select

    @property
    def param_groups(self) -> list[dict]:
        return [group for group in self.optimizer.param_groups if self.select(group)]


class _Window:
    """One timm schedule (legacy or per-step semantics) over some groups, run during epochs [start, end) as if
    the training started at `start` and lasted `end − start` epochs; lr 0 outside the window."""

    def __init__(self, groups: _Groups, start: int, end: int, mode: str, sched: str, steps_per_epoch: int,
                 lr_min: float, warmup_lr: float, warmup_epochs: int, warmup_steps: int, decay_rate: float):
        self.groups, self.start, self.end = groups, start, end
        self.mode, self.warmup_epochs, self.steps_per_epoch = mode, warmup_epochs, steps_per_epoch
        epochs = end - start
        if mode == "legacy":
            num, warmup = epochs, warmup_epochs
        elif mode == "step":
            warmup = min(warmup_steps, epochs * steps_per_epoch)
            num = max(epochs * steps_per_epoch - warmup, 1)
        else:
            raise ValueError(f"unknown lr schedule mode {mode!r} (choices: legacy, step)")
        self.scheduler = None
        if epochs > 0 and groups.param_groups:
            self.scheduler, _ = create_scheduler_v2(groups, sched=sched, num_epochs=num, warmup_epochs=warmup,
                                                    warmup_lr=warmup_lr, min_lr=lr_min, warmup_prefix=True,
                                                    decay_rate=decay_rate, cycle_limit=1)

    def position(self, epoch: int, iteration: int) -> int:
        """The timm scheduler's time index for step `iteration` (0-based) of `epoch` (counted from the window's start).

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
        if not self.start <= epoch < self.end:
            for group in self.groups.param_groups:
                group["lr"] = 0.0
        elif self.scheduler is not None:
            self.scheduler.step(self.position(epoch - self.start, iteration))


class LRSchedule:
    """The learning rate of every parameter group as a function of the position (epoch, step) alone.

    `apply(epoch, iteration)` runs before each optimiser step (the training loop calls it between the
    forward and the backward pass of a step that is not skipped): the main optimiser's groups follow the timm
    schedule (legacy or per-step semantics), the "own" groups the loss's `own_lr(initial_lr, epoch)`. Nothing
    depends on the calls before, so a resumed run (at an epoch boundary or inside an epoch) needs no replay.
    With `towers` the `IMAGE_SIDE` groups and the other main groups follow one schedule each, over their windows.
    """

    def __init__(self, optimizers: Optimizers, mode: str, sched: str, epochs: int, steps_per_epoch: int,
                 lr_min: float, warmup_lr: float, warmup_epochs: int = 0, warmup_steps: int = 0,
                 decay_rate: float = 1.0, towers: TowerSchedule | None = None):
        self.optimizers = optimizers
        main = optimizers.main
        if towers is None:
            windows = [(_Groups(main, lambda group: True), 0, epochs)]
        else:
            windows = [(_Groups(main, lambda group: group.get(IMAGE_SIDE, False)), 0, towers.image_end),
                       (_Groups(main, lambda group: not group.get(IMAGE_SIDE, False)), towers.text_start,
                        towers.text_end)]
        self.windows = [_Window(groups, start, end, mode, sched, steps_per_epoch, lr_min, warmup_lr, warmup_epochs,
                                warmup_steps, decay_rate) for groups, start, end in windows]

    def apply(self, epoch: int, iteration: int) -> None:
        """Set the learning rate of every parameter group for step `iteration` of `epoch`."""
        for window in self.windows:
            window.apply(epoch, iteration)
        own, own_lr = self.optimizers.own, self.optimizers.own_lr
        if own is not None and own_lr is not None:
            for group in own.param_groups:
                group["lr"] = own_lr(group["initial_lr"], epoch)
