"""FastCLIP's four temperature schemes on the shared GCL core (losses spec §6).

All versions use the negatives-only normaliser, the FastCLIP γ schedule (γ = 1 in epoch 0) and the
log-domain state. Gradient conventions (§6.5), F_δ = mean_i log g^δ_i:
* v0: τ = e^{−θ}, θ = log(1/τ) learnable; features get ½∇(F_I + F_T), θ gets ∂(F_I + F_T)/∂θ.
* v1: constant τ; features get ½∇(F_I + F_T).
* v2: per-sample τ (Adam-like rule); features get ½∇(F_I + F_T) with each anchor's own τ_i.
* v3: global learnable τ on the RGCL-g objective τ·½(F_I + F_T) + ρτ; features get τ·½∇(F_I + F_T),
  τ gets ρ + ½Σ_δ mean ℓ_δ − k·Σ_δ mean E_w[h/τ] with k = 1 (`reference`) or ½ (`consistent`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Batch, GCLLoss, LossOutput
from .estimator import Normaliser

V3_TAU_GRADS = ("reference", "consistent")
LR_TAU_SCHEDULERS = ("cosine", "const", "step_thresh")  # θ's lr: the main schedule, constant, ÷3 once τ ≤ 0.03
LOGIT_SCALE_MAX = math.log(100.0)  # θ = log(1/τ) ∈ [0, ln 100], i.e. τ ∈ [0.01, 1]
G_CLIP = 5.0
SIDES = ("img", "txt")
V2_LR_TAU = 0.0133  # FastCLIP README, CC3M
V3_LR_TAU = 2e-4
V3_TAU_THRESHOLD = 0.03


class FastCLIPLoss(GCLLoss):
    """FastCLIP v0–v3: Σ_δ mean_i log g^δ_i (GCL) or its robust τ-individualised / global-τ versions.
    Paper: Wei et al., "FastCLIP: A Suite of Optimization Techniques to Accelerate CLIP Training with Limited Resources" (2024).

    v2's rule per anchor, with G_i = clip(ℓ_i + ρ − E_w[x_i], ±5): m ← β1·m + (1−β1)·G, v ← β2·v + (1−β2)·G²,
    τ ← clip(τ − lr_tau·m̂/(√v̂ + eps), τ_min, τ_max), bias correction 1 − β^{epoch+1}, β1 = β2 = 0 in epoch 0.
    """

    def __init__(self, num_samples: int, version: int, temp: float = 0.07, sogclr_gamma: float = 0.2,
                 gamma_schedule: str = "cosine", gamma_decay_epochs: int | None = None,
                 state_init: str = "first_visit", rho_I: float | None = None, rho_T: float | None = None,
                 tau_init: float = 0.03, tau_min: float = 0.01, tau_max: float = 1.0, lr_tau: float | None = None,
                 tau_beta1: float = 0.9, tau_beta2: float = 0.999, tau_eps: float = 1e-8,
                 v3_tau_grad: str = "reference", lr_tau_scheduler: str | None = None,
                 dist_mode: str = "autograd") -> None:
        if version not in (0, 1, 2, 3):
            raise ValueError(f"FastCLIP version must be 0..3, got {version}")
        fields = {f"log_u_{s}": -math.inf for s in SIDES}
        if version == 2:
            fields.update({f"{k}_{s}": v for k, v in (("tau", tau_init), ("m", 0.0), ("v", 0.0)) for s in SIDES})
        super().__init__(num_samples, fields, sogclr_gamma, gamma_schedule, gamma_decay_epochs, state_init,
                         gamma_one_at_epoch0=True, dist_mode=dist_mode)
        if v3_tau_grad not in V3_TAU_GRADS:
            raise ValueError(f"v3_tau_grad must be one of {V3_TAU_GRADS}, got {v3_tau_grad!r}")
        if lr_tau_scheduler is not None and lr_tau_scheduler not in LR_TAU_SCHEDULERS:
            raise ValueError(f"lr_tau_scheduler must be one of {LR_TAU_SCHEDULERS}, got {lr_tau_scheduler!r}")
        # FastCLIP's defaults: v0 follows the model's schedule, v3 uses step_thresh
        self.lr_tau_scheduler = lr_tau_scheduler or ("step_thresh" if version == 3 else "cosine")
        if temp <= 0.0 or not 0.0 < tau_min < tau_max:
            raise ValueError(f"need temp > 0 and 0 < tau_min < tau_max (got {temp}, {tau_min}, {tau_max})")
        self.version = version
        default_rho = {2: 7.0, 3: 6.5}.get(version, 0.0)
        self.rho = {"img": default_rho if rho_I is None else float(rho_I),
                    "txt": default_rho if rho_T is None else float(rho_T)}
        self.temp = float(temp)
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        # lr_tau: v0 the main lr unless given; v2 the per-sample rule's step (0.0133); v3 its own Adam (2e-4)
        self.lr_tau = {2: V2_LR_TAU, 3: V3_LR_TAU}.get(version) if lr_tau is None else float(lr_tau)
        self.betas, self.tau_eps = (float(tau_beta1), float(tau_beta2)), float(tau_eps)
        self.tau_grad_weight = 1.0 if v3_tau_grad == "reference" else 0.5
        if version in (0, 3):
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temp)))

    def param_groups(self) -> list[dict]:
        """v0/v3: θ at lr_tau (v0 default: the main lr), in the main optimiser on the model's schedule
        (`cosine`) or in its own Adam with a constant or `step_thresh` lr."""
        if self.version not in (0, 3):
            return []
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
        h = dict(zip(SIDES, batch.differences()))
        b, dtype = batch.img.shape[0], batch.img.dtype
        if self.version in (0, 3):
            with torch.no_grad():
                self.logit_scale.clamp_(0.0, LOGIT_SCALE_MAX)
            tau_global = torch.exp(-self.logit_scale.to(dtype))
        else:
            tau_global = h["img"].new_full((), self.temp)
        norm, gamma = Normaliser.negatives_only(batch.size), self.gamma
        loss, new, stats, objective, terms = 0.0, {}, {}, h["img"].new_zeros(()), []
        log_u_sum, mean_x_sum = h["img"].new_zeros(()), h["img"].new_zeros(())
        for s in SIDES:
            if self.version == 2:
                tau = self.read(f"tau_{s}", batch.ids, dtype)
            else:
                tau = tau_global.detach().expand(b)
            d = self.direction(h[s], batch, tau, f"log_u_{s}", norm, gamma)
            new[f"log_u_{s}"] = d.log_u
            surrogate = d.surrogate(h[s])  # [b], τ-scaled: ∇ = τ_i·∇log g_i
            # the features see coef·surrogate: ½∇log g (v0–v2) or τ·½∇log g (v3)
            coef = 0.5 if self.version == 3 else 0.5 / tau
            terms.append(d.row_term(s, coef))
            loss = loss + (coef * surrogate).mean()
            if self.version == 0:
                # θ (1/τ = e^θ): the full ∂(ĝ/u)/∂θ = (1/τ)·Σ_j w_ij h_ij/(B−1)
                loss = loss + (surrogate.detach() / tau_global).mean()
            elif self.version == 3:
                log_u_sum = log_u_sum + d.log_u.mean()
                mean_x_sum = mean_x_sum + d.mean_x(h[s], tau).mean()
            if self.version == 2:
                new.update(self._v2_update(s, batch.ids, tau, d.rgcl_grad(h[s], tau, self.rho[s])))
            objective = objective + (tau * (d.log_u + self.rho[s])).mean()
            stats[f"tau_{s}"] = tau.mean()
        if self.version == 3:
            rho = 0.5 * (self.rho["img"] + self.rho["txt"])
            # a term linear in τ whose τ-gradient is the v3 rule (the features see none of it)
            loss = loss + tau_global * (rho + 0.5 * log_u_sum - self.tau_grad_weight * mean_x_sum)
        skipped, candidates = self.write(batch, new, terms)
        stats.update({"gamma": objective.new_full((), gamma), "objective": objective, "nonfinite": skipped})
        return LossOutput(loss + candidates, stats)

    def _v2_update(self, side: str, ids: Tensor, tau: Tensor, grad: Tensor) -> dict[str, Tensor]:
        """FastCLIP-v2's per-sample Adam-like temperature step (reference bias-correction quirk kept)."""
        beta1, beta2 = (0.0, 0.0) if self.epoch == 0 else self.betas
        grad = grad.clamp(-G_CLIP, G_CLIP)
        m = beta1 * self.read(f"m_{side}", ids, tau.dtype) + (1.0 - beta1) * grad
        v = beta2 * self.read(f"v_{side}", ids, tau.dtype) + (1.0 - beta2) * grad.square()
        m_hat = m / (1.0 - beta1 ** (self.epoch + 1))
        v_hat = v / (1.0 - beta2 ** (self.epoch + 1))
        step = self.lr_tau * m_hat / (v_hat.sqrt() + self.tau_eps)
        return {f"tau_{side}": (tau - step).clamp(self.tau_min, self.tau_max), f"m_{side}": m, f"v_{side}": v}
