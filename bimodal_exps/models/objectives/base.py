"""Shared plumbing of the distillation objectives: teacher side, global rows, step-gated state (docs/losses.md §15).

Every objective is a function of the global batch, computed identically on every rank from the all-gathered
features. Its state (queues, pointers, centre, prior) is updated inside the forward, after the loss value, from
the detached global teacher rows, through `torch.where` on "the loss is finite": the engine skips exactly the
steps whose loss is non-finite (on any rank, and the value is the same on every rank), so a skipped step leaves
the state untouched without a host sync.
"""
from __future__ import annotations

import torch
from torch import Tensor

from models.gcl.base import Batch, ContrastiveLoss, LossOutput

TEACHERS = ("text", "image")


def global_rows(batch: Batch) -> tuple[Tensor, Tensor]:
    """Global [B, d] image and text rows whose gradient, after DDP's average over ranks, is the single-process one.

    autograd mode: the gather's backward sums the W identical gradients of the replicated term. fastclip mode:
    the gather carries no gradient, so the own rows are substituted with an exact copy whose gradient is scaled
    by W (a loss parameter's gradient stays unscaled, unlike `Batch.replicated`).
    """
    if not batch.split:
        return batch.all_img, batch.all_txt

    def own(rows: Tensor, local: Tensor) -> Tensor:
        scaled = local + (batch.world - 1) * (local - local.detach())  # value exactly `local`, gradient ×W
        return rows.index_copy(0, batch.pos_col, scaled)

    return own(batch.all_img, batch.img), own(batch.all_txt, batch.txt)


@torch.no_grad()
def gated(old: Tensor, new: Tensor, finite: Tensor) -> Tensor:
    """`new` if the step's loss is finite (a 0-dim bool tensor), else `old`; no host sync.

    The result is a new tensor that replaces the buffer: the old one may be saved for this step's backward.
    """
    return torch.where(finite, new.to(old.dtype), old)


@torch.no_grad()
def enqueue(queue: Tensor, pointer: Tensor, rows: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
    """(queue with `rows` written at slots pointer, pointer + 1, … mod K, pointer advanced by len(rows)).

    With more rows than slots only the last K are kept (the ones a row-by-row write would leave).
    """
    size, count = queue.shape[0], rows.shape[0]
    kept = min(size, count)
    slots = (pointer + (count - kept) + torch.arange(kept, device=queue.device)) % size
    new_queue = queue.index_copy(0, slots, rows[count - kept:].to(queue.dtype))
    return gated(queue, new_queue, finite), gated(pointer, (pointer + count) % size, finite)


def check_positive(**values: float) -> None:
    """One-line error naming the flag of every non-positive value."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}")


class DistillLoss(ContrastiveLoss):
    """Base of the objectives: picks teacher t and student s from the global batch and gates the state update.

    `uni_directional` objectives detach every teacher-side quantity, so the teacher tower gets exactly zero
    gradient. `w_simcse` > 0 asks the training task for ITRA's SimCSE term on the captions. Subclasses
    implement `objective(t, s) -> (value, stats)` and, when stateful, `update(t, s, finite)`.
    """

    uni_directional = False

    def __init__(self, teacher: str = "text", w_distill: float = 1.0, w_simcse: float = 0.0,
                 dist_mode: str = "autograd") -> None:
        super().__init__(dist_mode)
        if teacher not in TEACHERS:
            raise ValueError(f"--teacher must be one of {TEACHERS}, got {teacher!r}")
        if w_simcse < 0:
            raise ValueError(f"--w_simcse must be >= 0, got {w_simcse}")
        self.teacher = teacher
        self.w_distill = float(w_distill)
        self.w_simcse = float(w_simcse)  # read by the training task, which runs the second text forward

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(L, extra stats) from the global teacher rows t and student rows s, both [B, d]."""
        raise NotImplementedError

    def update(self, t: Tensor, s: Tensor, finite: Tensor) -> None:
        """Advance the state from the detached global rows (no state by default)."""

    def _compute(self, batch: Batch) -> LossOutput:
        img, txt = global_rows(batch)
        t, s = (txt, img) if self.teacher == "text" else (img, txt)
        if self.uni_directional:
            t = t.detach()
        value, stats = self.objective(t, s)
        loss = self.w_distill * value
        self.update(t.detach(), s.detach(), torch.isfinite(loss.detach()))
        return LossOutput(loss, {"objective": value.detach(), **{k: v.detach() for k, v in stats.items()}})


def check_width(features: Tensor, width: int, flag: str = "embed_dim") -> None:
    """The state was sized for `width` columns; features of another width are a one-line error."""
    if features.shape[1] != width:
        raise ValueError(f"features have {features.shape[1]} columns but the loss state was sized for {width} "
                         f"(--{flag})")
