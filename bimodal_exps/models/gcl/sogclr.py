"""SogCLR and InfoSogCLR: GCL with a constant global temperature (docs/losses.md §4, §7)."""
from __future__ import annotations

import torch
from torch import Tensor

from .candidates import SIDES
from .core import GCLLoss, Step
from .estimator import NORMALIZERS, Normaliser
from .regularizers import off_diagonal_cov, variance_hinge
from .temperature import ISogCLRRule, TauRule, check_tau_range


class SogCLRLoss(GCLLoss):
    """Σ_δ mean_i τ·log g^δ_i with g the dataset mean of exp(h/τ) over negatives, estimated by a moving average.
    Paper: Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning" (SogCLR, ICML'22).

    `gcl_normalizer="positive_included"` reproduces the ISOG reference (B terms over B − 1), whose
    γ = 1 gradient is 2τ·∇CLIP.
    """

    def __init__(self, num_samples: int, temp: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gcl_normalizer: str = "negatives",
                 dist_mode: str = "autograd", tau_rule: TauRule | None = None,
                 tau_init: float | None = None) -> None:
        super().__init__(num_samples, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode, tau_rule=tau_rule, tau_init=tau_init)
        if temp <= 0.0:
            raise ValueError(f"temp must be positive, got {temp}")
        if gcl_normalizer not in NORMALIZERS:
            raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, got {gcl_normalizer!r}")
        self.temp = float(temp)
        self.gcl_normalizer = gcl_normalizer

    def anchor_tau(self, step: Step) -> dict[str, Tensor]:
        return dict.fromkeys(SIDES, step.batch.img.new_full((), self.temp))

    def normaliser(self, step: Step) -> Normaliser:
        return Normaliser.named(self.gcl_normalizer, step.batch.size)


class InfoSogCLRLoss(SogCLRLoss):
    """SogCLR with positive mass α in the normaliser plus covariance (and variance) penalties on both modalities.
    Paper: none, defined in docs/losses.md §7; builds on SogCLR (ICML'22) and VICReg (Bardes et al., ICLR'22).

    loss = SogCLR_α + cov_coeff·[C(E) + C(Z)] + std_coeff·[V(E) + V(Z)]/2 on the gathered normalised
    features. α = 0 is SogCLR; α = 1/B (`info_alpha="batch"`) gives 2τ·∇CLIP at γ = 1. On unit-norm
    features the per-dimension std is about 1/√d, so the variance hinge (target 1) is always active.
    `individual_tau` learns τ_i per sample and modality with iSogCLR's rule, G_i = ℓ_i + ρ − E_{p_i}[h/τ_i]
    with p_i's mass α on the positive, a constant step η = `eta_init`, τ ∈ [tau_min, tau_max].
    """

    def __init__(self, num_samples: int, temp: float = 0.01, sogclr_gamma: float = 0.8,
                 gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", info_alpha: str | float = 0.0,
                 cov_coeff: float = 1.0, std_coeff: float = 0.0, dist_mode: str = "autograd",
                 individual_tau: bool = False, tau_init: float = 0.01, rho_I: float = 6.0, rho_T: float = 6.0,
                 eta_init: float = 0.03, beta_u: float = 0.9, tau_min: float = 0.005, tau_max: float = 0.05) -> None:
        rule = None
        if individual_tau:
            check_tau_range(tau_min, tau_max, tau_init)
            rule = ISogCLRRule(eta_init=float(eta_init), beta_u=float(beta_u), tau_min=float(tau_min),
                               tau_max=float(tau_max))
        super().__init__(num_samples, temp, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode, tau_rule=rule, tau_init=tau_init if individual_tau else None)
        self.info_alpha = parse_alpha(info_alpha)
        self.cov_coeff = float(cov_coeff)
        self.std_coeff = float(std_coeff)
        if individual_tau:
            self.rho = {"img": float(rho_I), "txt": float(rho_T)}

    def normaliser(self, step: Step) -> Normaliser:
        size = step.batch.size
        return Normaliser.with_alpha(1.0 / size if self.info_alpha == "batch" else self.info_alpha, size)

    def regulariser(self, step: Step) -> Tensor:
        cov, var = step.batch.replicated(_penalties).unbind()
        step.stats.update({"cov_penalty": cov.detach(), "var_penalty": var.detach()})
        return self.cov_coeff * cov + self.std_coeff * var


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
