"""FastCLIP's four temperature schemes as hook sets on the GCL core (docs/losses.md §9).
Paper: Wei et al., "FastCLIP: A Suite of Optimization Techniques to Accelerate CLIP Training with Limited
Resources" (2024).

All versions use the negatives-only normaliser, the FastCLIP γ schedule (γ = 1 in epoch 0) and the
log-domain state. Gradient conventions, F_δ = mean_i log g^δ_i:
* v0: τ = e^{−θ}, θ = log(1/τ) learnable; features get ½∇(F_I + F_T), θ gets ∂(F_I + F_T)/∂θ.
* v1: constant τ; features get ½∇(F_I + F_T).
* v2: per-sample τ (`temperature.FastCLIPv2Rule`); features get ½∇(F_I + F_T) with each anchor's own τ_i.
* v3: global learnable τ on the RGCL-g objective τ·½(F_I + F_T) + ρτ; features get τ·½∇(F_I + F_T),
  τ gets ρ + ½Σ_δ mean ℓ_δ − k·Σ_δ mean E_w[h/τ] with k = 1 (`reference`) or ½ (`consistent`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Batch, LossOutput
from .candidates import SIDES
from .core import GCLLoss, Step
from .estimator import Direction
from .temperature import FastCLIPv2Rule, check_tau_range

V3_TAU_GRADS = ("reference", "consistent")
LR_TAU_SCHEDULERS = ("cosine", "const", "step_thresh")  # θ's lr: the main schedule, constant, ÷3 once τ ≤ 0.03
LOGIT_SCALE_MAX = math.log(100.0)  # θ = log(1/τ) ∈ [0, ln 100], i.e. τ ∈ [0.01, 1]
V2_LR_TAU = 0.0133  # FastCLIP README, CC3M
V3_LR_TAU = 2e-4
V3_TAU_THRESHOLD = 0.03


class FastCLIPLoss(GCLLoss):
    """FastCLIP: what the four versions share (γ schedule with γ = 1 in epoch 0, ρ, features that see ½∇log g).
    Paper: Wei et al., "FastCLIP" (2024; full title in the module docstring).

    The features' coefficient on the τ-scaled surrogate is ½/τ (v0–v2); each version sets the anchor τ.
    """

    default_rho = 0.0

    def __init__(self, num_samples: int, sogclr_gamma: float = 0.2, gamma_schedule: str = "cosine",
                 gamma_decay_epochs: int | None = None, state_init: str = "first_visit",
                 rho_I: float | None = None, rho_T: float | None = None, dist_mode: str = "autograd",
                 **core: object) -> None:
        super().__init__(num_samples, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         gamma_one_at_epoch0=True, dist_mode=dist_mode, **core)
        self.rho = {"img": self.default_rho if rho_I is None else float(rho_I),
                    "txt": self.default_rho if rho_T is None else float(rho_T)}

    def feature_coef(self, step: Step, side: str, d: Direction) -> Tensor | float:
        return 0.5 / d.tau


class FastCLIPv1Loss(FastCLIPLoss):
    """FastCLIP v1: a constant τ (`temp`).
    Paper: Wei et al., "FastCLIP" (2024; full title in the module docstring).
    """

    def __init__(self, num_samples: int, temp: float = 0.07, **kw: object) -> None:
        super().__init__(num_samples, **kw)
        if temp <= 0.0:
            raise ValueError(f"temp must be positive, got {temp}")
        self.temp = float(temp)

    def anchor_tau(self, step: Step) -> dict[str, Tensor]:
        return dict.fromkeys(SIDES, step.batch.img.new_full((), self.temp))


class FastCLIPv2Loss(FastCLIPLoss):
    """FastCLIP v2: a τ per sample and modality, updated by an Adam-like rule (`temperature.FastCLIPv2Rule`).
    Paper: Wei et al., "FastCLIP" (2024; full title in the module docstring).
    """

    default_rho = 7.0

    def __init__(self, num_samples: int, tau_init: float = 0.03, tau_min: float = 0.01, tau_max: float = 1.0,
                 lr_tau: float | None = None, tau_beta1: float = 0.9, tau_beta2: float = 0.999,
                 tau_eps: float = 1e-8, **kw: object) -> None:
        check_tau_range(tau_min, tau_max, tau_init)
        rule = FastCLIPv2Rule(lr=V2_LR_TAU if lr_tau is None else float(lr_tau), beta1=float(tau_beta1),
                              beta2=float(tau_beta2), eps=float(tau_eps), tau_min=float(tau_min),
                              tau_max=float(tau_max))
        super().__init__(num_samples, tau_rule=rule, tau_init=tau_init, **kw)


class _LearnedGlobalTau(FastCLIPLoss):
    """v0 and v3: one learnable θ = log(1/τ), clamped to [0, ln 100] before every forward.

    θ trains at `lr_tau` in the main optimiser on the model's schedule (`cosine`) or in its own Adam with a
    constant (`const`) or `step_thresh` lr (÷3 while τ ≤ 0.03, checked at each epoch start, so the step loop
    needs no host sync; the published code checks every step).
    """

    default_lr_tau: float | None = None
    default_scheduler = "cosine"

    def __init__(self, num_samples: int, temp: float = 0.07, lr_tau: float | None = None,
                 lr_tau_scheduler: str | None = None, **kw: object) -> None:
        super().__init__(num_samples, **kw)
        if temp <= 0.0:
            raise ValueError(f"temp must be positive, got {temp}")
        if lr_tau_scheduler is not None and lr_tau_scheduler not in LR_TAU_SCHEDULERS:
            raise ValueError(f"lr_tau_scheduler must be one of {LR_TAU_SCHEDULERS}, got {lr_tau_scheduler!r}")
        self.lr_tau_scheduler = lr_tau_scheduler or self.default_scheduler
        self.lr_tau = self.default_lr_tau if lr_tau is None else float(lr_tau)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temp)))

    def param_groups(self) -> list[dict]:
        target = "main" if self.lr_tau_scheduler == "cosine" else "own"
        group = {"params": [self.logit_scale], "weight_decay": 0.0, "optimizer": target}
        if self.lr_tau is not None:
            group["lr"] = self.lr_tau
        return [group]

    def own_lr(self, base_lr: float, epoch: int) -> float:
        """`const`: lr_tau; `step_thresh`: lr_tau, divided by 3 while τ ≤ 0.03 (the engine asks before every
        step, as the reference checks; one host read of τ per step)."""
        if self.lr_tau_scheduler == "const":
            return base_lr
        tau = math.exp(-float(self.logit_scale.detach()))
        return base_lr / 3.0 if tau <= V3_TAU_THRESHOLD else base_lr

    def _compute(self, batch: Batch) -> LossOutput:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)
        return super()._compute(batch)

    def anchor_tau(self, step: Step) -> dict[str, Tensor]:
        return dict.fromkeys(SIDES, torch.exp(-self.logit_scale.to(step.batch.img.dtype)))


class FastCLIPv0Loss(_LearnedGlobalTau):
    """FastCLIP v0: a learned global τ = e^{−θ}; θ gets the full ∂(F_I + F_T)/∂θ (at the main lr by default).
    Paper: Wei et al., "FastCLIP" (2024; full title in the module docstring).
    """

    def extra_loss(self, step: Step, side: str, d: Direction) -> Tensor:
        """(1/τ)·neg_coef·Σ_j w_ij·h_ij with a gradient on τ only: ∂/∂θ of log g at 1/τ = e^θ."""
        return (d.weighted_h / step.tau[side]).mean()


class FastCLIPv3Loss(_LearnedGlobalTau):
    """FastCLIP v3: a learned global τ on the RGCL-g objective; features get τ·½∇(F_I + F_T).
    Paper: Wei et al., "FastCLIP" (2024; full title in the module docstring).

    τ gets the v3 rule through a term linear in τ.
    """

    default_rho = 6.5
    default_lr_tau = V3_LR_TAU
    default_scheduler = "step_thresh"

    def __init__(self, num_samples: int, v3_tau_grad: str = "reference", **kw: object) -> None:
        if v3_tau_grad not in V3_TAU_GRADS:
            raise ValueError(f"v3_tau_grad must be one of {V3_TAU_GRADS}, got {v3_tau_grad!r}")
        super().__init__(num_samples, **kw)
        self.tau_grad_weight = 1.0 if v3_tau_grad == "reference" else 0.5

    def feature_coef(self, step: Step, side: str, d: Direction) -> float:
        return 0.5

    def extra_loss(self, step: Step, side: str, d: Direction) -> Tensor:
        """τ·(½ρ_δ + ½·mean ℓ_δ − k·mean E_w[h/τ]): summed over δ, its τ-gradient is the v3 rule."""
        rate = 0.5 * self.rho[side] + 0.5 * d.log_u.mean() - self.tau_grad_weight * d.mean_x().mean()
        return step.tau[side] * rate.to(step.tau[side].dtype)
