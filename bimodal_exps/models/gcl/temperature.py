"""Per-sample temperature rules and τ-range checks shared by the losses (docs/losses.md §5, §7, §9).

A rule updates the stored τ_i of the anchors visited in a step from the estimate
G_i = ℓ_i + ρ − E_{p_i}[h/τ_i] of ∂/∂τ_i [τ_i·log g_i + ρτ_i]; `core.GCLLoss` reads and writes its state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from torch import Tensor

from .schedules import ETA_COSINE_KINDS, ETA_SCHEDULES, eta_at

G_CLIP = 5.0  # both rules clip G to ±5


def check_tau_range(tau_min: float, tau_max: float, tau_init: float | None = None) -> None:
    """0 < tau_min < tau_max, and tau_init (when there is one) inside [tau_min, tau_max]."""
    if not 0.0 < tau_min < tau_max:
        raise ValueError(f"need 0 < tau_min < tau_max, got tau_min={tau_min}, tau_max={tau_max}")
    if tau_init is not None and not tau_min <= tau_init <= tau_max:
        raise ValueError(f"tau_init={tau_init} outside [tau_min, tau_max] = [{tau_min}, {tau_max}]")


class TauRule(Protocol):
    """A per-sample τ update: `fields` names its own state (per side, besides τ) with initial values."""

    fields: ClassVar[dict[str, float]]
    tau_min: float

    def step(self, tau: Tensor, grad: Tensor, state: dict[str, Tensor], epoch: int,
             num_epochs: int) -> dict[str, Tensor]:
        """{"tau": new τ, **new `fields`} from the old τ, G and the old `fields` values ([b] each)."""
        ...

    def stats(self, epoch: int, num_epochs: int) -> dict[str, float]:
        """Scalars to log with the loss (e.g. the step size of the epoch)."""
        ...


@dataclass(frozen=True)
class ISogCLRRule:
    """iSogCLR (docs/losses.md §5): m ← (1−β_u)·m + β_u·clip(G, ±5), τ ← clip(τ − η·m, τ_min, τ_max).

    η follows `eta_sched` by epoch (`schedules.eta_at`); "const" keeps η = `eta_init`.
    """

    fields: ClassVar[dict[str, float]] = {"m": 0.0}
    eta_init: float
    beta_u: float
    tau_min: float
    tau_max: float
    eta_sched: str = "const"
    eta_min: float = 1e-4
    eta_exp_gamma: float = 0.8
    eta_cosine: str = "quarter"
    eta_exp_parity: bool = False

    def __post_init__(self) -> None:
        if self.eta_sched not in ETA_SCHEDULES or self.eta_cosine not in ETA_COSINE_KINDS:
            raise ValueError(f"eta_sched must be one of {ETA_SCHEDULES} and eta_cosine one of {ETA_COSINE_KINDS}")

    def eta(self, epoch: int, num_epochs: int) -> float:
        """η of `epoch`."""
        return eta_at(epoch, num_epochs, self.eta_init, self.eta_sched, self.eta_min, self.eta_exp_gamma,
                      self.eta_cosine, self.eta_exp_parity)

    def step(self, tau: Tensor, grad: Tensor, state: dict[str, Tensor], epoch: int,
             num_epochs: int) -> dict[str, Tensor]:
        m = (1.0 - self.beta_u) * state["m"] + self.beta_u * grad.clamp(-G_CLIP, G_CLIP)
        return {"tau": (tau - self.eta(epoch, num_epochs) * m).clamp(self.tau_min, self.tau_max), "m": m}

    def stats(self, epoch: int, num_epochs: int) -> dict[str, float]:
        return {"eta": self.eta(epoch, num_epochs)}


@dataclass(frozen=True)
class FastCLIPv2Rule:
    """FastCLIP v2 (docs/losses.md §9): an Adam-like step on clip(G, ±5) with β1 = β2 = 0 in epoch 0.

    m ← β1·m + (1−β1)·G, v ← β2·v + (1−β2)·G², τ ← clip(τ − lr·m̂/(√v̂ + eps), τ_min, τ_max) with the bias
    correction 1 − β^{epoch+1} of the published code (per epoch, not per step).
    """

    fields: ClassVar[dict[str, float]] = {"m": 0.0, "v": 0.0}
    lr: float
    beta1: float
    beta2: float
    eps: float
    tau_min: float
    tau_max: float

    def step(self, tau: Tensor, grad: Tensor, state: dict[str, Tensor], epoch: int,
             num_epochs: int) -> dict[str, Tensor]:
        beta1, beta2 = (0.0, 0.0) if epoch == 0 else (self.beta1, self.beta2)
        grad = grad.clamp(-G_CLIP, G_CLIP)
        m = beta1 * state["m"] + (1.0 - beta1) * grad
        v = beta2 * state["v"] + (1.0 - beta2) * grad.square()
        m_hat = m / (1.0 - beta1 ** (epoch + 1))
        v_hat = v / (1.0 - beta2 ** (epoch + 1))
        step = self.lr * m_hat / (v_hat.sqrt() + self.eps)
        return {"tau": (tau - step).clamp(self.tau_min, self.tau_max), "m": m, "v": v}

    def stats(self, epoch: int, num_epochs: int) -> dict[str, float]:
        return {}
