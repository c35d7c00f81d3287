"""HybridSogCLR, corrected definition and its reference-parity mode (docs/losses.md §8, §12)."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from . import collectives
from .base import Batch, LossOutput
from .candidates import SIDES
from .core import GCLLoss, Step
from .estimator import NORMALIZERS, Direction, Normaliser
from .regularizers import off_diagonal_cov, variance_hinge
from .tiled import blocks

HYBRID_STD = ("unbiased", "population")
PARITY_SLOTS = 8192            # HYB aliases every id ≥ 8191 onto slot 8191
PARITY_LOG_CAP = math.log(1e3)  # HYB caps exp(·) at 1e3
PARITY_REG_WEIGHT = 0.1         # weight of HYB's "covariance" and "difficulty" terms


def row_moments(batch: Batch) -> tuple[Tensor, Tensor]:
    """(Σ_j h_ij, Σ_j h_ij²) of the image anchors' rows, in blocks of `batch.tile` (one block when 0)."""
    img, txt, pos = batch.img.detach(), batch.all_txt.detach(), batch.positives.detach()  # (cached with grad)
    row_sum, row_sq = img.new_zeros(img.shape[0]), img.new_zeros(img.shape[0])
    for rows in blocks(img.shape[0], batch.tile):
        for cols in blocks(txt.shape[0], batch.tile):
            h = img[rows] @ txt[cols].T - pos[rows].unsqueeze(1)
            row_sum[rows] += h.sum(dim=1)
            row_sq[rows] += h.square().sum(dim=1)
    return row_sum, row_sq


@torch.no_grad()
def global_similarity_std(row_sum: Tensor, row_sq: Tensor, cols: int, pos: Tensor, unbiased: bool) -> Tensor:
    """Std of all B² entries of the global cosine matrix S = h + pos from this rank's row moments of h.

    Two passes over row statistics (Σ_j h_ij, Σ_j h_ij² over the `cols` = B columns), so no extra [b, B]
    tensor is formed.
    """
    total = collectives.all_reduce_sum(torch.stack([row_sum.sum() + cols * pos.sum(),
                                                    row_sum.new_full((), float(cols * row_sum.shape[0]))]))
    mean, n = total[0] / total[1], total[1]
    centred = pos - mean
    sq = collectives.all_reduce_sum((row_sq + 2.0 * centred * row_sum + cols * centred.square()).sum())
    return torch.sqrt(sq / (n - 1 if unbiased else n))


class HybridSogCLRLoss(GCLLoss):
    """SogCLR at the adaptive global temperature τ_t = τ₀·(1 + tanh σ_t), σ_t the std of the batch cosine matrix.
    Paper: none, defined in docs/losses.md §8; builds on SogCLR (Yuan et al., ICML'22).

    Optional VICReg terms on both modalities (off by default): std_coeff·Σ_m mean_k relu(1/√d − √(Var_k + 1e-4))
    + cov_coeff·Σ_m C(X_m). `hybrid_parity` reproduces the reference: positive-included normaliser, exp
    capped at 1e3, epoch-0 warm start, 8192 aliased state slots, the Base scale ½·(B−1)/(B·τ_t) and its
    +0.1·Σ_m mean_k Var_k and difficulty terms.
    """

    def __init__(self, num_samples: int, tau_init: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gcl_normalizer: str = "negatives", cov_coeff: float = 0.0,
                 std_coeff: float = 0.0, hybrid_parity: bool = False, hybrid_std: str = "unbiased",
                 dist_mode: str = "autograd") -> None:
        if hybrid_parity:
            state_init, gcl_normalizer = "epoch0", "positive_included"
        super().__init__(num_samples, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode)
        if tau_init <= 0.0:
            raise ValueError(f"tau_init must be positive, got {tau_init}")
        if gcl_normalizer not in NORMALIZERS or hybrid_std not in HYBRID_STD:
            raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, hybrid_std one of {HYBRID_STD}")
        self.tau0 = float(tau_init)
        self.gcl_normalizer = gcl_normalizer
        self.cov_coeff, self.std_coeff = float(cov_coeff), float(std_coeff)
        self.parity = hybrid_parity
        self.log_cap = PARITY_LOG_CAP if hybrid_parity else None
        self.unbiased_std = hybrid_std == "unbiased"

    def _compute(self, batch: Batch) -> LossOutput:
        if self.parity:
            batch = dataclasses.replace(batch, ids=batch.ids.clamp(max=min(self.num_samples, PARITY_SLOTS) - 1))
        return super()._compute(batch)

    def anchor_tau(self, step: Step) -> dict[str, Tensor]:
        """τ_t from the std of the global similarity matrix (no gradient), the same for every anchor."""
        batch = step.batch
        row_sum, row_sq = row_moments(batch)
        sigma = global_similarity_std(row_sum, row_sq, batch.size, batch.positives.detach(), self.unbiased_std)
        step.stats["sim_std"] = sigma
        return dict.fromkeys(SIDES, self.tau0 * (1.0 + torch.tanh(sigma)))

    def normaliser(self, step: Step) -> Normaliser:
        return Normaliser.named(self.gcl_normalizer, step.batch.size)

    def feature_coef(self, step: Step, side: str, d: Direction) -> Tensor | float:
        """HYB's Base scale ½·(B−1)/(B·τ_t) in parity mode (τ_t carries no gradient), else 1."""
        if not self.parity:
            return 1.0
        size = step.batch.size
        return 0.5 * (size - 1) / (size * step.tau[side])

    def regulariser(self, step: Step) -> Tensor | float:
        if self.parity:
            tau_t = step.tau["img"]
            return step.batch.replicated(lambda img, txt: self._parity_terms(img, txt, tau_t))
        if self.cov_coeff or self.std_coeff:
            return step.batch.replicated(self._vicreg)
        return 0.0

    def _vicreg(self, img: Tensor, txt: Tensor) -> Tensor:
        """std_coeff·Σ_m mean_k relu(1/√d − √(Var_k + 1e-4)) + cov_coeff·Σ_m C(X_m) on the global features."""
        reg = img.new_zeros(())
        if self.cov_coeff:
            reg = reg + self.cov_coeff * (off_diagonal_cov(img) + off_diagonal_cov(txt))
        if self.std_coeff:
            target = 1.0 / math.sqrt(img.shape[1])
            reg = reg + self.std_coeff * (variance_hinge(img, target) + variance_hinge(txt, target))
        return reg

    @staticmethod
    def _parity_terms(img: Tensor, txt: Tensor, tau_t: Tensor) -> Tensor:
        """HYB's +0.1·Σ_m mean_k Var_k(X_m) and +0.1·Δ on the global features.

        Δ = −mean_ij(S_ij/τ_t·a_i·c_j) = −(aᵀE)·(cᵀZ)/(τ_t·B²) with the detached softmax weights
        a = softmax(‖e_i − ē‖), c = softmax(‖z_j − z̄‖), so the B×B matrix is never formed.
        """
        var = img.var(dim=0).mean() + txt.var(dim=0).mean()
        with torch.no_grad():
            a = torch.softmax((img - img.mean(dim=0)).norm(dim=1), dim=0)
            c = torch.softmax((txt - txt.mean(dim=0)).norm(dim=1), dim=0)
        difficulty = -torch.dot(a @ img, c @ txt) / (tau_t * img.shape[0] ** 2)
        return PARITY_REG_WEIGHT * (var + difficulty)
