"""Bi-directional feature matching: SimReg (L2, L1, smooth L1), VICReg, Barlow Twins (docs/losses.md §15)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, check_positive

SIMREG_KINDS = ("l2", "l1", "smoothl1")
BT_NORMS = ("standard", "itra")


class SimRegLoss(DistillLoss):
    """Mean over the B·d entries of ρ(t − s), ρ = square, |·| or smooth-L1 (β = 1).
    Paper: Navaneet et al., "SimReg: Regression as a Simple Yet Effective Tool for Self-supervised Knowledge
    Distillation" (BMVC'21)."""

    def __init__(self, kind: str = "l2", **kw) -> None:
        super().__init__(**kw)
        if kind not in SIMREG_KINDS:
            raise ValueError(f"SimReg kind must be one of {SIMREG_KINDS}, got {kind!r}")
        self.kind = kind

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.kind == "l2":
            return F.mse_loss(s, t), {}
        if self.kind == "l1":
            return F.l1_loss(s, t), {}
        return F.smooth_l1_loss(s, t, beta=1.0), {}


def _off_diagonal_square_sum(c: Tensor) -> Tensor:
    return (c.pow(2).sum() - c.diagonal().pow(2).sum())


class VICRegLoss(DistillLoss):
    """sim·invariance + std·variance hinge + cov·off-diagonal covariance, both sides (X = teacher, Y = student).
    Paper: Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning"
    (ICLR'22)."""

    def __init__(self, vicreg_sim_coeff: float = 25.0, vicreg_std_coeff: float = 25.0,
                 vicreg_cov_coeff: float = 1.0, **kw) -> None:
        super().__init__(**kw)
        self.sim, self.std, self.cov = float(vicreg_sim_coeff), float(vicreg_std_coeff), float(vicreg_cov_coeff)

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        b, d = t.shape
        if b < 2:
            raise ValueError("vicreg needs a global batch of at least 2 pairs")
        inv = F.mse_loss(s, t)
        std, cov = 0.0, 0.0
        for x in (t, s):
            centred = x - x.mean(dim=0)
            sigma = torch.sqrt(centred.pow(2).sum(dim=0) / (b - 1) + 1e-4)
            std = std + 0.5 * F.relu(1 - sigma).mean()
            cov = cov + _off_diagonal_square_sum(centred.T @ centred / (b - 1)) / d
        value = self.sim * inv + self.std * std + self.cov * cov
        return value, {"vicreg_inv": inv, "vicreg_std": std, "vicreg_cov": cov}


class BarlowTwinsLoss(DistillLoss):
    """Σ_j (1 − C_jj)² + λ Σ_{j≠k} C_jk² for the cross-correlation C of the column-normalised global batch.

    `standard` (the paper's): columns standardised (mean 0, population std); `itra` (parity with ITRA):
    columns only l2-normalised over the batch, which makes the on-diagonal term ≈ d.
    Paper: Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction" (ICML'21).
    """

    def __init__(self, bt_lambda: float = 0.0051, bt_norm: str = "standard", **kw) -> None:
        super().__init__(**kw)
        if bt_norm not in BT_NORMS:
            raise ValueError(f"--bt_norm must be one of {BT_NORMS}, got {bt_norm!r}")
        check_positive(bt_lambda=bt_lambda)
        self.lam, self.norm = float(bt_lambda), bt_norm

    def _columns(self, x: Tensor) -> Tensor:
        if self.norm == "itra":
            return F.normalize(x, dim=0, eps=1e-12)
        centred = x - x.mean(dim=0)
        return centred / centred.pow(2).mean(dim=0).sqrt().clamp_min(1e-12)

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c = self._columns(t).T @ self._columns(s) / t.shape[0]
        on = (1 - c.diagonal()).pow(2).sum()
        off = _off_diagonal_square_sum(c)
        return on + self.lam * off, {"bt_on_diag": on, "bt_off_diag": off}
