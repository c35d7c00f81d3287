"""FastCLIP's "candidate part" of the distributed loss (`dist_mode = fastclip`, docs/losses.md §11).

With `dist_mode="fastclip"` every rank all-gathers the features *without* autograd, so its local anchor
rows send gradients only to the anchor side (the row features and the positive pair). The gradient the
local candidates would have received from the anchors of all ranks is rebuilt locally instead: every
feature-gradient term of the losses has the row-weighted form

    (1/b)·Σ_{i local} coef_i·Σ_j w_ij·∇h_ij,   w_ij = exp(min(x_ij, cap) − ℓ_i),   x_ij = h_ij/τ_i

(w detached, 0 at the positive column unless the positive is a candidate, as in CLIP). Each rank shares
the per-anchor scalars (ℓ_i, τ_i, coef_i) of its local anchors (b·3 numbers per term, after the state
update, so ℓ is the *updated* value) and computes, for all B global anchors j against its b local
candidates i, the same weights from the transposed local similarity block S_ji = ⟨anchor_j, cand_i⟩:

    candidate part = (1/b)·Σ_{j global} Σ_{i local} coef_j·w_ji·S_ji     (gradient on the candidates only;
                                                                         its value is subtracted)

After DDP's gradient average over W ranks this adds exactly the candidate gradient of the global mean
objective, so the backward needs no collective (no reduce-scatter of B×d feature gradients).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .tiled import blocks, positive_mask

SIDES = ("img", "txt")  # the two anchor modalities: image anchors vs texts, text anchors vs images
SCALARS_PER_TERM = 3  # ℓ, τ, coef


@dataclass(frozen=True)
class RowTerm:
    """One direction's row-weighted feature-gradient term, described by per-anchor scalars ([b] each).

    `anchor` is the anchors' modality: "img" (image anchors vs text candidates) or "txt". `coef` is the
    detached factor in front of Σ_j w_ij·h_ij in the per-rank loss's mean over local anchors (it includes
    the estimator's neg_coef). `mask_positive` drops the anchor's own pair from its candidates.
    """

    anchor: str
    log_u: Tensor
    tau: Tensor
    coef: Tensor
    mask_positive: bool = True
    log_cap: float | None = None

    def __post_init__(self) -> None:
        if self.anchor not in SIDES:
            raise ValueError(f"anchor must be one of {SIDES}, got {self.anchor!r}")

    def scalars(self) -> Tensor:
        """[b, 3] detached (ℓ, τ, coef) of the local anchors, in ℓ's dtype (float64 for the GCL state)."""
        parts = (self.log_u, self.tau, self.coef)
        return torch.stack([p.detach().to(self.log_u.dtype).expand_as(self.log_u) for p in parts], dim=1)


def pack(terms: Sequence[RowTerm]) -> Tensor:
    """[b, 3·T] scalars of all terms, ready for one all-gather."""
    return torch.cat([t.scalars() for t in terms], dim=1)


@torch.no_grad()
def candidate_weights(block: Tensor, anchor_pos: Tensor, pos_col: Tensor, term: RowTerm,
                      scalars: Tensor, cols: slice) -> Tensor:
    """[b, c] coef_j·w_ji of global anchors j ∈ `cols` (columns) against the local candidates i (rows).

    block: [b, c] S_ji stored transposed (row = local candidate); anchor_pos: [c] S_jj of those anchors;
    pos_col: [b] global column of each local candidate's own pair; scalars: [c, 3] gathered (ℓ, τ, coef).
    """
    log_u, tau, coef = scalars.to(block.dtype).unbind(dim=1)
    x = (block.detach() - anchor_pos) / tau
    if term.log_cap is not None:
        x.clamp_(max=term.log_cap)
    weights = x.sub_(log_u).exp_().mul_(coef)
    if term.mask_positive:
        weights.masked_fill_(positive_mask(pos_col, slice(None), cols), 0.0)
    return weights


@dataclass(frozen=True)
class CandidateView:
    """One direction seen from its local candidates (texts for image anchors, images for text anchors)."""

    anchors: Tensor     # [B, d] detached global anchor features
    candidates: Tensor  # [b, d] local candidate features (with grad)
    block: Tensor | None = None  # [b, B] S_ji = ⟨candidate_i, anchor_j⟩ when already formed (values only)

    def columns(self, cols: slice) -> Tensor:
        """[b, c] S_ji for the global anchors j ∈ `cols` (a slice of `block`, or formed now)."""
        if self.block is not None:
            return self.block[:, cols]
        return self.candidates.detach() @ self.anchors[cols].T


def candidate_loss(terms: Sequence[RowTerm], gathered: Tensor, views: dict[str, CandidateView],
                   anchor_pos: Tensor, pos_col: Tensor, tile: int = 0) -> Tensor:
    """Σ_terms (1/b)·Σ_ij coef_j·w_ji·S_ji with the value subtracted: it only adds the candidate gradient.

    `views[term.anchor]` describes the term's direction; `gathered` is [B, 3·T]. The gradient w.r.t.
    candidate i is Σ_j coef_j·w_ji·anchor_j, so the sum is formed as Σ_i ⟨cand_i, (W·Â)_i⟩: autograd keeps
    a [b, d] tensor for the backward instead of the [b, B] weights, which are formed in column blocks of
    `tile` (0: one block).
    """
    total = anchor_pos.new_zeros(())
    for k, term in enumerate(terms):
        view = views[term.anchor]
        scalars = gathered[:, SCALARS_PER_TERM * k:SCALARS_PER_TERM * (k + 1)]
        pull = view.candidates.new_zeros(view.candidates.shape)  # [b, d], no grad
        for cols in blocks(view.anchors.shape[0], tile):
            weights = candidate_weights(view.columns(cols), anchor_pos[cols], pos_col, term, scalars[cols], cols)
            pull += weights @ view.anchors[cols]
        total = total + torch.einsum("id,id->", view.candidates, pull) / view.candidates.shape[0]
    return total - total.detach()
