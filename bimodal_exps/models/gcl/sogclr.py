"""SogCLR and InfoSogCLR: GCL with a constant global temperature (losses spec §3, §8)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Batch, GCLLoss, LossOutput
from .estimator import NORMALIZERS, Normaliser
from .regularizers import off_diagonal_cov, variance_hinge


class SogCLRLoss(GCLLoss):
    """Σ_δ mean_i τ·log g^δ_i with g the dataset mean of exp(h/τ) over negatives, estimated by a moving average.
    Paper: Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning" (SogCLR, ICML'22).

    `gcl_normalizer="positive_included"` reproduces the ISOG reference (B terms over B − 1), whose
    γ = 1 gradient is 2τ·∇CLIP.
    """

    def __init__(self, num_samples: int, temp: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gcl_normalizer: str = "negatives",
                 dist_mode: str = "autograd") -> None:
        super().__init__(num_samples, {"log_u_img": -math.inf, "log_u_txt": -math.inf}, sogclr_gamma,
                         gamma_schedule, gamma_decay_epochs, state_init, dist_mode=dist_mode)
        if temp <= 0.0:
            raise ValueError(f"temp must be positive, got {temp}")
        if gcl_normalizer not in NORMALIZERS:
            raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, got {gcl_normalizer!r}")
        self.temp = float(temp)
        self.gcl_normalizer = gcl_normalizer

    def normaliser(self, batch: int) -> Normaliser:
        return Normaliser.named(self.gcl_normalizer, batch)

    def regulariser(self, batch: Batch) -> tuple[Tensor | float, dict[str, Tensor]]:
        """Extra loss term computed on the global features via `Batch.replicated` (none for SogCLR)."""
        return 0.0, {}

    def _compute(self, batch: Batch) -> LossOutput:
        h_img, h_txt = batch.differences()
        tau = h_img.new_full((h_img.shape[0],), self.temp)
        norm, gamma = self.normaliser(batch.size), self.gamma
        d_img = self.direction(h_img, batch, tau, "log_u_img", norm, gamma)
        d_txt = self.direction(h_txt, batch, tau, "log_u_txt", norm, gamma)
        skipped, candidates = self.write(batch, {"log_u_img": d_img.log_u, "log_u_txt": d_txt.log_u},
                                         [d_img.row_term("img"), d_txt.row_term("txt")])
        reg, reg_stats = self.regulariser(batch)
        loss = d_img.surrogate(h_img).mean() + d_txt.surrogate(h_txt).mean() + candidates + reg
        stats = {"tau_img": tau[0], "tau_txt": tau[0], "gamma": h_img.new_full((), gamma),
                 "objective": self.temp * (d_img.log_u.mean() + d_txt.log_u.mean()),
                 "nonfinite": skipped, **reg_stats}
        return LossOutput(loss, stats)


class InfoSogCLRLoss(SogCLRLoss):
    """SogCLR with positive mass α in the normaliser plus covariance (and variance) penalties on both modalities.
    Paper: InfoSogCLR (seed-000 project, losses spec §8), building on SogCLR (ICML'22) and VICReg (ICLR'22).

    loss = SogCLR_α + cov_coeff·[C(E) + C(Z)] + std_coeff·[V(E) + V(Z)]/2 on the gathered normalised
    features. α = 0 is SogCLR; α = 1/B (`info_alpha="batch"`) gives 2τ·∇CLIP at γ = 1. On unit-norm
    features the per-dimension std is about 1/√d, so the variance hinge (target 1) is always active.
    """

    def __init__(self, num_samples: int, temp: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", info_alpha: str | float = 0.0,
                 cov_coeff: float = 1.0, std_coeff: float = 0.0, dist_mode: str = "autograd") -> None:
        super().__init__(num_samples, temp, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode)
        self.info_alpha = parse_alpha(info_alpha)
        self.cov_coeff = float(cov_coeff)
        self.std_coeff = float(std_coeff)

    def normaliser(self, batch: int) -> Normaliser:
        alpha = 1.0 / batch if self.info_alpha == "batch" else self.info_alpha
        return Normaliser.with_alpha(alpha, batch)

    def regulariser(self, batch: Batch) -> tuple[Tensor | float, dict[str, Tensor]]:
        cov, var = batch.replicated(_penalties).unbind()
        reg = self.cov_coeff * cov + self.std_coeff * var
        return reg, {"cov_penalty": cov.detach(), "var_penalty": var.detach()}


def _penalties(img: Tensor, txt: Tensor) -> Tensor:
    """[C(E) + C(Z), (V(E) + V(Z))/2] of the global features."""
    cov = off_diagonal_cov(img) + off_diagonal_cov(txt)
    var = 0.5 * (variance_hinge(img) + variance_hinge(txt))
    return torch.stack([cov, var])


def parse_alpha(value: str | float) -> str | float:
    """`info_alpha`: a float in [0, 1) or "batch" (α = 1/B with the global B)."""
    if isinstance(value, str):
        if value.strip().lower() == "batch":
            return "batch"
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"info_alpha must be a float in [0, 1) or 'batch', got {value!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"info_alpha must lie in [0, 1), got {value}")
    return float(value)
