"""The one GCL loop every bimodal stateful loss runs, and the hooks by which the losses differ.

Per side δ ∈ (img, txt): anchor τ → estimator direction (ℓ update, weights; docs/losses.md §2) → the
feature term coef·surrogate → the candidate-part row term (`--dist_mode fastclip`, docs/losses.md §11)
→ new state rows (ℓ, per-sample τ) → stats; then one write of every row into the replicated state,
plus the candidate part and the regulariser. A loss overrides only the hooks it needs:

* `anchor_tau(step)`: τ per side, 0-dim (one global τ) or [b], may carry a gradient (learned τ).
  Or pass a `tau_rule` (`temperature.py`): per-sample τ kept in the state and updated on each visit.
* `normaliser(step)`: the normaliser of ĝ (default: negatives only).
* `feature_coef(step, side, d)`: detached factor of the side's surrogate (default 1).
* `tau_update(step, side, d)`: new per-sample τ state (default: the `tau_rule`, if any).
* `extra_loss(step, side, d)`: further per-side terms, e.g. the gradient of a learned τ (default 0).
* `regulariser(step)`: terms of the global features, through `Batch.replicated` (default 0).

Hooks may add detached 0-dim values to `step.stats`. The objective reported is Σ_δ mean_i τ_i·(ℓ_i + ρ_δ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Batch, LossOutput, StatefulLoss
from .candidates import SIDES
from .estimator import Direction, Normaliser
from .temperature import TauRule


@dataclass
class Step:
    """One forward of a GCL loss, handed to every hook."""

    batch: Batch
    gamma: float
    tau: dict[str, Tensor] = field(default_factory=dict)     # anchor τ per side as returned (may carry grad)
    stats: dict[str, Tensor] = field(default_factory=dict)   # detached 0-dim values to log


class GCLLoss(StatefulLoss):
    """Σ_δ mean_i coef·τ-scaled GCL surrogate of side δ, with the state ℓ (and τ_i) of every pair id."""

    log_cap: float | None = None  # clamp of x = h/τ (HybridSogCLR parity); None: no clamp
    tileable = True

    def __init__(self, num_samples: int, sogclr_gamma: float, gamma_schedule: str = "constant",
                 gamma_decay_epochs: int | None = None, state_init: str = "first_visit", *,
                 gamma_one_at_epoch0: bool = False, dist_mode: str = "autograd", tau_rule: TauRule | None = None,
                 tau_init: float | None = None) -> None:
        fields = {f"log_u_{s}": -math.inf for s in SIDES}
        if tau_rule is not None:
            if tau_init is None:
                raise ValueError("a per-sample τ rule needs tau_init")
            fields.update({f"tau_{s}": tau_init for s in SIDES})
            fields.update({f"{k}_{s}": v for k, v in tau_rule.fields.items() for s in SIDES})
        super().__init__(num_samples, fields, sogclr_gamma, gamma_schedule=gamma_schedule,
                         gamma_decay_epochs=gamma_decay_epochs, state_init=state_init,
                         gamma_one_at_epoch0=gamma_one_at_epoch0, dist_mode=dist_mode)
        self.tau_rule = tau_rule
        self.rho = {s: 0.0 for s in SIDES}  # ρ_δ of the robust objective; 0 for the plain GCL losses

    # --- hooks ---------------------------------------------------------------------------------------

    def anchor_tau(self, step: Step) -> dict[str, Tensor]:
        """τ of this rank's anchors per side (0-dim or [b]); required unless the loss has a `tau_rule`."""
        raise NotImplementedError(f"{type(self).__name__} needs anchor_tau or a tau_rule")

    def normaliser(self, step: Step) -> Normaliser:
        """The normaliser of ĝ for this batch (negatives only by default)."""
        return Normaliser.negatives_only(step.batch.size)

    def feature_coef(self, step: Step, side: str, d: Direction) -> Tensor | float:
        """Detached factor of the side's τ-scaled surrogate in the loss (0-dim or [b])."""
        return 1.0

    def tau_update(self, step: Step, side: str, d: Direction) -> dict[str, Tensor]:
        """New per-sample τ state rows of the side (the `tau_rule` step with G = ℓ + ρ − E_w[h/τ])."""
        if self.tau_rule is None:
            return {}
        grad = d.rgcl_grad(self.rho[side])
        step.stats[f"grad_tau_{side}"] = grad.mean()
        ids = step.batch.ids
        old = {k: self.read(f"{k}_{side}", ids) for k in self.tau_rule.fields}
        new = self.tau_rule.step(step.tau[side], grad, old, self.epoch, self.num_epochs)
        return {f"{k}_{side}": v for k, v in new.items()}

    def extra_loss(self, step: Step, side: str, d: Direction) -> Tensor | float:
        """A further term of the side's loss (0 by default)."""
        return 0.0

    def regulariser(self, step: Step) -> Tensor | float:
        """A term of the global features (use `step.batch.replicated`); 0 by default."""
        return 0.0

    # --- the loop --------------------------------------------------------------------------------------

    def _anchor_tau(self, step: Step) -> dict[str, Tensor]:
        if self.tau_rule is not None:
            return {s: self.read(f"tau_{s}", step.batch.ids) for s in SIDES}
        return self.anchor_tau(step)

    def _compute(self, batch: Batch) -> LossOutput:
        step = Step(batch, self.gamma)
        step.tau = self._anchor_tau(step)
        norm = self.normaliser(step)
        b, dtype = batch.img.shape[0], batch.img.dtype
        loss, objective, new, terms = 0.0, 0.0, {}, []
        for s in SIDES:
            tau = step.tau[s].detach().expand(b)
            h = batch.pairs(s, tau.to(dtype), log_cap=self.log_cap) if batch.tile else batch.differences[SIDES.index(s)]
            d = self.direction(h, batch, tau, f"log_u_{s}", norm, step.gamma, self.log_cap)
            coef = self.feature_coef(step, s, d)
            coef = coef.to(dtype) if torch.is_tensor(coef) else coef
            loss = loss + (coef * d.surrogate()).mean() + self.extra_loss(step, s, d)
            terms.append(d.row_term(s, coef))
            new[f"log_u_{s}"] = d.log_u
            new.update(self.tau_update(step, s, d))
            objective = objective + (tau * (d.log_u + self.rho[s])).mean()
            step.stats[f"tau_{s}"] = tau.mean()
        skipped, candidates = self.write(batch, new, terms)
        loss = loss + candidates + self.regulariser(step)
        rule_stats = self.tau_rule.stats(self.epoch, self.num_epochs) if self.tau_rule is not None else {}
        scalars = {"gamma": step.gamma, **rule_stats}
        step.stats.update({k: batch.img.new_full((), v) for k, v in scalars.items()})
        step.stats.update({"objective": objective, "nonfinite": skipped})
        return LossOutput(loss, step.stats)

    def fraction_at_tau_min(self) -> float | None:
        """Share of the visited samples' τ_i (both sides) at the rule's τ_min; None without per-sample τ.

        One host sync; the engine calls it once per epoch.
        """
        if self.tau_rule is None:
            return None
        visited = torch.stack([torch.isfinite(getattr(self, f"log_u_{s}")) for s in SIDES])
        at_min = visited & (torch.stack([getattr(self, f"tau_{s}") for s in SIDES]) <= self.tau_rule.tau_min)
        seen, low = torch.stack([visited.sum(), at_min.sum()]).tolist()
        return low / seen if seen else 0.0
