"""iSogCLR: robust GCL with a learned temperature per sample and modality (docs/losses.md §5)."""
from __future__ import annotations

from .core import GCLLoss, Step
from .estimator import NORMALIZERS, Normaliser
from .temperature import ISogCLRRule, check_tau_range


class ISogCLRLoss(GCLLoss):
    """Σ_δ mean_i [τ^δ_i·log g^δ_i(τ^δ_i) + ρ_δ·τ^δ_i] over the encoder and per-sample τ ∈ [τ_min, τ_max].
    Paper: Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with
    Automatic Temperature Individualization" (iSogCLR, ICML'23).

    Per visit: G_i = ℓ_i + ρ − E_w[h/τ_i] (the τ-derivative estimate), m_i ← (1−β_u)·m_i + β_u·clip(G_i, ±5),
    τ_i ← clip(τ_i − η·m_i, τ_min, τ_max) (`temperature.ISogCLRRule`); this step's loss uses the old τ_i.
    """

    def __init__(self, num_samples: int, tau_init: float = 0.01, rho_I: float = 6.0, rho_T: float = 6.0,
                 sogclr_gamma: float = 0.8, gamma_schedule: str = "constant", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", gcl_normalizer: str = "negatives", eta_init: float = 0.03,
                 eta_sched: str = "const", eta_min: float = 1e-4, eta_exp_gamma: float = 0.8,
                 eta_cosine: str = "quarter", eta_exp_parity: bool = False, beta_u: float = 0.9,
                 tau_min: float = 0.005, tau_max: float = 0.05, dist_mode: str = "autograd") -> None:
        check_tau_range(tau_min, tau_max, tau_init)
        if gcl_normalizer not in NORMALIZERS:
            raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, got {gcl_normalizer!r}")
        rule = ISogCLRRule(eta_init=float(eta_init), beta_u=float(beta_u), tau_min=float(tau_min),
                           tau_max=float(tau_max), eta_sched=eta_sched, eta_min=float(eta_min),
                           eta_exp_gamma=float(eta_exp_gamma), eta_cosine=eta_cosine,
                           eta_exp_parity=bool(eta_exp_parity))
        super().__init__(num_samples, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         dist_mode=dist_mode, tau_rule=rule, tau_init=tau_init)
        self.rho = {"img": float(rho_I), "txt": float(rho_T)}
        self.gcl_normalizer = gcl_normalizer

    def normaliser(self, step: Step) -> Normaliser:
        return Normaliser.named(self.gcl_normalizer, step.batch.size)
