"""SogCLR and InfoSogCLR: GCL with a constant global temperature (losses spec §3, §8)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Batch, GCLLoss, LossOutput
from .estimator import NORMALIZERS, Direction, Normaliser
from .isogclr import check_tau_range, individual_tau_step
from .regularizers import off_diagonal_cov, variance_hinge

SIDES = ("img", "txt")


class SogCLRLoss(GCLLoss):
    """Σ_δ mean_i τ·log g^δ_i with g the dataset mean of exp(h/τ) over negatives, estimated by a moving average.
    Paper: Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning" (SogCLR, ICML'22).

    `gcl_normalizer="positive_included"` reproduces the ISOG reference (B terms over B − 1), whose
    γ = 1 gradient is 2τ·∇CLIP.
    """

    def __init__(self, num_samples: int, temp: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gcl_normalizer: str = "negatives",
                 dist_mode: str = "autograd", extra_fields: dict[str, float] | None = None) -> None:
        super().__init__(num_samples, {"log_u_img": -math.inf, "log_u_txt": -math.inf, **(extra_fields or {})},
                         sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init, dist_mode=dist_mode)
        if temp <= 0.0:
            raise ValueError(f"temp must be positive, got {temp}")
        if gcl_normalizer not in NORMALIZERS:
            raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, got {gcl_normalizer!r}")
        self.temp = float(temp)
        self.gcl_normalizer = gcl_normalizer
        self.rho = {s: 0.0 for s in SIDES}  # the objective is Σ_δ mean τ·(log g + ρ_δ); ρ matters with τ_i only

    def normaliser(self, batch: int) -> Normaliser:
        return Normaliser.named(self.gcl_normalizer, batch)

    def regulariser(self, batch: Batch) -> tuple[Tensor | float, dict[str, Tensor]]:
        """Extra loss term computed on the global features via `Batch.replicated` (none for SogCLR)."""
        return 0.0, {}

    def anchor_tau(self, side: str, batch: Batch, h: Tensor) -> Tensor:
        """[b] temperatures of this rank's anchors in direction `side` (the constant `temp` here)."""
        return h.new_full((h.shape[0],), self.temp)

    def tau_update(self, side: str, batch: Batch, d: Direction, h: Tensor, tau: Tensor) -> dict[str, Tensor]:
        """The anchors' per-sample τ state after this step, written with ℓ (none with a constant τ)."""
        return {}

    def _compute(self, batch: Batch) -> LossOutput:
        h = dict(zip(SIDES, batch.differences()))
        norm, gamma = self.normaliser(batch.size), self.gamma
        loss, new, terms, stats = 0.0, {}, [], {}
        objective = h["img"].new_zeros(())
        for s in SIDES:
            tau = self.anchor_tau(s, batch, h[s])
            d = self.direction(h[s], batch, tau, f"log_u_{s}", norm, gamma)
            new[f"log_u_{s}"] = d.log_u
            new.update(self.tau_update(s, batch, d, h[s], tau))
            terms.append(d.row_term(s))
            loss = loss + d.surrogate(h[s]).mean()
            objective = objective + (tau * (d.log_u + self.rho[s])).mean()
            stats[f"tau_{s}"] = tau.mean()
        skipped, candidates = self.write(batch, new, terms)
        reg, reg_stats = self.regulariser(batch)
        stats.update({"gamma": objective.new_full((), gamma), "objective": objective, "nonfinite": skipped,
                      **reg_stats})
        return LossOutput(loss + candidates + reg, stats)


class InfoSogCLRLoss(SogCLRLoss):
    """SogCLR with positive mass α in the normaliser plus covariance (and variance) penalties on both modalities.
    Paper: InfoSogCLR (seed-000 project, losses spec §8), building on SogCLR (ICML'22) and VICReg (ICLR'22).

    loss = SogCLR_α + cov_coeff·[C(E) + C(Z)] + std_coeff·[V(E) + V(Z)]/2 on the gathered normalised
    features. α = 0 is SogCLR; α = 1/B (`info_alpha="batch"`) gives 2τ·∇CLIP at γ = 1. On unit-norm
    features the per-dimension std is about 1/√d, so the variance hinge (target 1) is always active.
    `individual_tau` (§8.4) learns τ_i per sample and modality with iSogCLR's rule, G_i = ℓ_i + ρ − E_{p_i}[h/τ_i]
    with p_i's mass α on the positive, a constant step η = `eta_init`, τ ∈ [tau_min, tau_max].
    """

    def __init__(self, num_samples: int, temp: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", info_alpha: str | float = 0.0,
                 cov_coeff: float = 1.0, std_coeff: float = 0.0, dist_mode: str = "autograd",
                 individual_tau: bool = False, tau_init: float = 0.01, rho_I: float = 6.0, rho_T: float = 6.0,
                 eta_init: float = 0.03, beta_u: float = 0.9, tau_min: float = 0.005, tau_max: float = 0.05) -> None:
        extra = {}
        if individual_tau:
            check_tau_range(tau_min, tau_max, tau_init)
            extra = {f"{k}_{s}": v for k, v in (("tau", tau_init), ("m", 0.0)) for s in SIDES}
        super().__init__(num_samples, temp, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode, extra_fields=extra)
        self.info_alpha = parse_alpha(info_alpha)
        self.cov_coeff = float(cov_coeff)
        self.std_coeff = float(std_coeff)
        self.individual_tau = bool(individual_tau)
        if self.individual_tau:
            self.rho = {"img": float(rho_I), "txt": float(rho_T)}
            self.eta, self.beta_u, self.tau_min, self.tau_max = (float(eta_init), float(beta_u), float(tau_min),
                                                                 float(tau_max))

    def anchor_tau(self, side: str, batch: Batch, h: Tensor) -> Tensor:
        if not self.individual_tau:
            return super().anchor_tau(side, batch, h)
        return self.read(f"tau_{side}", batch.ids, h.dtype)

    def tau_update(self, side: str, batch: Batch, d: Direction, h: Tensor, tau: Tensor) -> dict[str, Tensor]:
        if not self.individual_tau:
            return {}
        tau_new, m = individual_tau_step(tau, self.read(f"m_{side}", batch.ids, h.dtype),
                                         d.rgcl_grad(h, tau, self.rho[side]), self.beta_u, self.eta,
                                         self.tau_min, self.tau_max)
        return {f"tau_{side}": tau_new, f"m_{side}": m}

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
