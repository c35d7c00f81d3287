"""The one GCL estimator every stateful loss uses (docs/losses.md §2; the α normaliser of §7).

For anchor i with temperature τ_i, scaled differences x_ij = sg(h_ij)/τ_i over the global candidates
j (the positive column excluded) and the normaliser

    L_i = log( pos_mass + neg_coef · Σ_{j≠i} exp(x_ij) )                     (= log ĝ_i, exact LSE)

the moving average is kept in the log domain, ℓ_i = log u_i:

    ℓ_i ← logaddexp( log(1−γ) + ℓ_i , log γ + L_i )        (ℓ_i ← L_i on a reset, see `reset_mask`)
    w_ij = exp(x_ij − ℓ_i)                                  (bounded by (B−1)/γ; 0 at the positive)

The normaliser covers every variant in one formula:
* negatives only (SogCLR, iSogCLR, TempNet, FastCLIP):   pos_mass = 0,        neg_coef = 1/(B−1)
* positive mass α (InfoSogCLR):                           pos_mass = α,        neg_coef = (1−α)/(B−1)
* ISOG positive-included parity (B terms over B−1):       pos_mass = 1/(B−1),  neg_coef = 1/(B−1)

The surrogate whose gradient is used is neg_coef·Σ_j w_ij·y_ij with y = h (τ-scaled) or y = h/τ with
the temperature's gradient (log-scaled); ∇ = (τ/u)·∇ĝ, i.e. ∇(τ·log ĝ) when u = ĝ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .candidates import RowTerm
from .tiled import Pairs

STATE_INITS = ("first_visit", "zero", "epoch0")
STATE_DTYPE = torch.float64  # ℓ and the per-row scalars derived from it (docs/losses.md §2)
NORMALIZERS = ("negatives", "positive_included")


@dataclass(frozen=True)
class Normaliser:
    """L_i = log(pos_mass + neg_coef·Σ_{j≠i} exp(x_ij)) for a global batch of B pairs."""

    pos_mass: float
    neg_coef: float

    @classmethod
    def negatives_only(cls, batch: int) -> "Normaliser":
        return cls(0.0, 1.0 / (batch - 1))

    @classmethod
    def positive_included(cls, batch: int) -> "Normaliser":
        """ISOG's `sogclr`/`sogclr_dro`: all B terms (x_ii = 0) divided by B − 1."""
        return cls(1.0 / (batch - 1), 1.0 / (batch - 1))

    @classmethod
    def with_alpha(cls, alpha: float, batch: int) -> "Normaliser":
        """InfoSogCLR: mass α on the positive, 1 − α spread uniformly over the B − 1 negatives."""
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"info_alpha must lie in [0, 1), got {alpha}")
        return cls(alpha, (1.0 - alpha) / (batch - 1))

    @classmethod
    def named(cls, name: str, batch: int) -> "Normaliser":
        if name == "negatives":
            return cls.negatives_only(batch)
        if name == "positive_included":
            return cls.positive_included(batch)
        raise ValueError(f"gcl_normalizer must be one of {NORMALIZERS}, got {name!r}")


@dataclass
class Direction:
    """Result of one direction (image→text or text→image) for the local anchors."""

    log_u: Tensor      # [b] updated ℓ = log u (the value to store), float64
    neg_coef: float
    tau: Tensor        # [b] anchor temperatures used for x = h/τ, in the compute dtype
    log_cap: float | None = None

    def surrogate(self, y: Tensor | None = None) -> Tensor:
        """[b] neg_coef·Σ_j w_ij·y_ij (y = h by default): its gradient is the GCL gradient (value meaningless)."""
        raise NotImplementedError

    @property
    def weighted_h(self) -> Tensor:
        """[b] neg_coef·Σ_j w_ij·h_ij, detached: the value of `surrogate()`."""
        raise NotImplementedError

    def row_term(self, anchor: str, coef: Tensor | float = 1.0) -> RowTerm:
        """The candidate-part description of `coef·surrogate(h)` in a loss (`anchor`: "img" or "txt").

        `coef` ([b] or scalar, detached) is the factor the loss puts in front of this direction's
        surrogate inside its mean over local anchors.
        """
        coef = torch.as_tensor(coef, dtype=self.log_u.dtype, device=self.log_u.device) * self.neg_coef
        return RowTerm(anchor, self.log_u, self.tau, coef, log_cap=self.log_cap)

    def mean_x(self) -> Tensor:
        """[b] E_{p_i}[h/τ] = neg_coef·Σ_j w_ij·x_ij (the positive has h = 0), detached, float64."""
        return self.weighted_h.to(STATE_DTYPE) / self.tau.to(STATE_DTYPE)

    def rgcl_grad(self, rho: Tensor | float) -> Tensor:
        """[b] G_i = ∂/∂τ_i [τ_i·log g_i + ρτ_i] estimated as ℓ_i + ρ − E_{p_i}[h/τ] (docs/losses.md §5), float64."""
        return self.log_u + rho - self.mean_x()


@dataclass(kw_only=True)
class DenseDirection(Direction):
    """A direction holding its [b, B] weights (the untiled layout)."""

    weights: Tensor    # [b, B] detached w_ij in the compute dtype, 0 at the positive column
    h: Tensor          # [b, B] the differences the weights were computed from (any grad state)
    _weighted_h: Tensor | None = field(default=None, repr=False)

    def surrogate(self, y: Tensor | None = None) -> Tensor:
        out = self.neg_coef * torch.einsum("ij,ij->i", self.weights, self.h if y is None else y)
        if y is None:
            self._weighted_h = out.detach()
        return out

    @property
    def weighted_h(self) -> Tensor:
        if self._weighted_h is None:
            self._weighted_h = self.neg_coef * torch.einsum("ij,ij->i", self.weights, self.h.detach())
        return self._weighted_h


@dataclass(kw_only=True)
class TiledDirection(Direction):
    """A direction whose weighted row sums were formed in blocks (`--loss_tile`, `tiled.py`); no [b, B] tensor."""

    rows: Tensor       # [b] neg_coef·Σ_j w_ij·h_ij with the gradient of h (w detached)

    def surrogate(self, y: Tensor | None = None) -> Tensor:
        if y is not None:
            raise ValueError("a tiled direction only has the surrogate of h")
        return self.rows

    @property
    def weighted_h(self) -> Tensor:
        return self.rows.detach()


def reset_mask(log_u_old: Tensor, state_init: str, epoch: int) -> Tensor:
    """Anchors whose ℓ is set to L_i instead of averaged (docs/losses.md §2, first visit).

    `first_visit`: ℓ is −inf (never written).  `epoch0`: every anchor during epoch 0.
    `zero`: none (u = 0 at init, so the first visit gives u = γ·ĝ).
    """
    if state_init == "first_visit":
        return torch.isneginf(log_u_old)
    if state_init == "epoch0":
        return torch.full_like(log_u_old, epoch == 0, dtype=torch.bool)
    if state_init == "zero":
        return torch.zeros_like(log_u_old, dtype=torch.bool)
    raise ValueError(f"state_init must be one of {STATE_INITS}, got {state_init!r}")


def log_normaliser(log_sum: Tensor, normaliser: Normaliser) -> Tensor:
    """L_i = log(pos_mass + neg_coef·e^{log_sum_i}) from the log-sum-exp of x over the negatives, float64."""
    log_g = log_sum.to(STATE_DTYPE) + math.log(normaliser.neg_coef)
    if normaliser.pos_mass > 0.0:
        log_g = torch.logaddexp(log_g, torch.full_like(log_g, math.log(normaliser.pos_mass)))
    return log_g


def moving_average(log_u_old: Tensor, log_g: Tensor, gamma: float, reset: Tensor) -> Tensor:
    """ℓ ← logaddexp(log(1−γ) + ℓ, log γ + L), or L where `reset`."""
    log_keep = math.log1p(-gamma) if gamma < 1.0 else -math.inf
    averaged = torch.logaddexp(log_u_old + log_keep, log_g + math.log(gamma))
    return torch.where(reset, log_g, averaged)


@torch.no_grad()
def gcl_direction(h: Tensor, pos_col: Tensor, tau: Tensor, log_u_old: Tensor, normaliser: Normaliser,
                  gamma: float, reset: Tensor, log_cap: float | None = None) -> Direction:
    """Run the estimator for b local anchors.

    h: [b, B] differences S_ij − S_ii (any grad state; only its value is used here), pos_col: [b]
    column of each anchor's positive, tau: [b] anchor temperatures, log_u_old: [b] stored ℓ.
    `log_cap` clamps x from above (HybridSogCLR parity: exp capped at 1e3).
    The [b, B] work stays in h's dtype; ℓ and the per-row scalars are float64, so the weights'
    factor exp(max_j x_ij − ℓ_i) keeps its precision when ℓ is large (ℓ ≈ 30 at small τ).
    """
    tau = tau.to(h.dtype)
    # one [b, B] buffer, updated in place: x -> exp(x − max) -> weights
    x = h.detach() / tau.unsqueeze(1)
    if log_cap is not None:
        x.clamp_(max=log_cap)
    x.scatter_(1, pos_col.unsqueeze(1), -math.inf)
    row_max = x.amax(dim=1)
    weights = x.sub_(row_max.unsqueeze(1)).exp_()
    row_max = row_max.to(STATE_DTYPE)
    log_g = log_normaliser(weights.sum(dim=1).to(STATE_DTYPE).log_() + row_max, normaliser)
    log_u = moving_average(log_u_old.to(STATE_DTYPE), log_g, gamma, reset)
    weights.mul_(torch.exp(row_max - log_u).to(weights.dtype).unsqueeze(1))  # exp(x − ℓ), bounded by (B−1)/γ
    return DenseDirection(log_u=log_u, weights=weights, neg_coef=normaliser.neg_coef, tau=tau, h=h, log_cap=log_cap)


def tiled_direction(pairs: Pairs, log_u_old: Tensor, normaliser: Normaliser, gamma: float, reset: Tensor,
                    tile: int) -> TiledDirection:
    """`gcl_direction` in blocks of `tile` (`tiled.py`): the same ℓ, weights and surrogate without [b, B] tensors."""
    row_max, log_sum = pairs.logsumexp(tile)
    log_g = log_normaliser(log_sum.to(STATE_DTYPE) + row_max.to(STATE_DTYPE), normaliser)
    log_u = moving_average(log_u_old.to(STATE_DTYPE), log_g, gamma, reset)
    log_scale = (row_max.to(STATE_DTYPE) - log_u).to(row_max.dtype)  # w = exp(x − m)·exp(m − ℓ)
    rows = normaliser.neg_coef * pairs.weighted_h(row_max, log_scale, tile)
    return TiledDirection(log_u=log_u, neg_coef=normaliser.neg_coef, tau=pairs.tau, log_cap=pairs.log_cap, rows=rows)
