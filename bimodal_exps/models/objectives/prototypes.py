"""Prototype distillation: DINO (centred teacher) and ProtoCPC (prior-weighted partition) (docs/losses.md §15).

The K prototypes P are a parameter of the loss (main optimiser, with weight decay); both sides are scored
against the row-normalised P̂, the teacher side without gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DistillLoss, check_positive, check_width, gated


class _PrototypeLoss(DistillLoss):
    uni_directional = True

    def __init__(self, embed_dim: int = 256, num_prototypes: int = 65536, distill_teacher_temp: float = 0.04,
                 distill_student_temp: float = 0.1, center_momentum: float = 0.9, **kw) -> None:
        super().__init__(**kw)
        check_positive(num_prototypes=num_prototypes, embed_dim=embed_dim, distill_teacher_temp=distill_teacher_temp,
                       distill_student_temp=distill_student_temp)
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"--center_momentum must be in [0, 1], got {center_momentum}")
        self.width = int(embed_dim)
        self.teacher_temp, self.student_temp = float(distill_teacher_temp), float(distill_student_temp)
        self.momentum = float(center_momentum)
        self.prototypes = nn.Parameter(nn.init.trunc_normal_(torch.empty(int(num_prototypes), self.width), std=0.02))

    def param_groups(self) -> list[dict]:
        return [{"params": [self.prototypes], "optimizer": "main"}]

    @torch.no_grad()
    def teacher_scores(self, t: Tensor) -> Tensor:
        """a^T without gradient, for the state update (the prototypes have not moved since the objective)."""
        return t @ F.normalize(self.prototypes.to(t.dtype), dim=1).T

    def scores(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """(a^T, a^S): cosine scores [B, K] of the teacher (no gradient) and student rows to the prototypes."""
        check_width(t, self.width)
        unit = F.normalize(self.prototypes.to(t.dtype), dim=1)
        return t @ unit.detach().T, s @ unit.T


class DINOLoss(_PrototypeLoss):
    """CE(sg softmax((a^T − c)/τ_t), softmax(a^S/τ_s)) with the centre c an EMA of the mean teacher scores.
    Paper: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (ICCV'21)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.register_buffer("center", torch.zeros(self.prototypes.shape[0]))

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        a_t, a_s = self.scores(t, s)
        q = F.softmax((a_t - self.center.to(a_t.dtype)) / self.teacher_temp, dim=1)
        loss = -(q * F.log_softmax(a_s / self.student_temp, dim=1)).sum(dim=1).mean()
        entropy = -(q * q.clamp_min(1e-30).log()).sum(dim=1).mean()
        return loss, {"teacher_entropy": entropy}

    def update(self, t: Tensor, s: Tensor, finite: Tensor) -> None:
        mean = self.teacher_scores(t).mean(dim=0)
        self.center = gated(self.center, self.momentum * self.center + (1 - self.momentum) * mean, finite)


class ProtoCPCLoss(_PrototypeLoss):
    """−⟨sg q, a^S/τ_s⟩ + log Σ_k π_k exp(a^S_k/τ_s), q = softmax(a^T/τ_t), prior π an EMA of the normalised
    teacher assignment mass (Σ π = K). Paper: Lee, "Prototypical Contrastive Predictive Coding" (ICLR'22)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.register_buffer("prior", torch.ones(self.prototypes.shape[0]))

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        a_t, a_s = self.scores(t, s)
        q = F.softmax(a_t / self.teacher_temp, dim=1)
        z = a_s / self.student_temp
        loss = (-(q * z).sum(dim=1) + torch.logsumexp(z + self.prior.to(z.dtype).log(), dim=1)).mean()
        return loss, {}

    def update(self, t: Tensor, s: Tensor, finite: Tensor) -> None:
        mass = F.softmax(self.teacher_scores(t) / self.teacher_temp, dim=1).sum(dim=0)
        mass = mass.shape[0] * mass / mass.sum()
        self.prior = gated(self.prior, self.momentum * self.prior + (1 - self.momentum) * mass, finite)
