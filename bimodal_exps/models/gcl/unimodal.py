"""Unimodal (two-view) contrastive losses: SogCLR's dynamic contrastive loss and SimCLR's NT-Xent (docs/losses.md §13).

The two augmented views a, b of the same images are passed in the slots of the bimodal interface:
`loss_fn(view_a, view_b, ids)` with local l2-normalised `[b, d]` features and int64 dataset indices.
Under torch.distributed the base class all-gathers both views with the summing backward, so each rank
computes its b local anchors against the 2B global candidates and DDP's gradient average is the exact
single-process gradient (docs/losses.md §11; unlike SOG1's gather, which dropped cross-rank candidate gradients).

Anchor a_i (and symmetrically b_i) sees raw cosines l_ij to the candidates [b_1..b_B, a_1..a_B]; its
positive is b_i and its own column a_i is excluded, which leaves 2(B−1) negatives.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Batch, ContrastiveLoss, LossOutput, StatefulLoss
from .estimator import Normaliser

UNIMODAL_LOSS_TYPES = ("dcl", "simclr")
LOSS_TYPE_ALIASES = {"sogclr": "dcl", "cl": "simclr"}


def view_logits(batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(l_a [b, 2B], l_b [b, 2B], l_pos [b], self_col [b]) for the local anchors of both views.

    Columns are [other view's B candidates, same view's B candidates]; the positive sits at `pos_col`,
    the anchor's own similarity (always 1) at `self_col` = B + pos_col.
    """
    a, b, all_a, all_b = batch.img, batch.txt, batch.all_img, batch.all_txt
    l_a = torch.cat([a @ all_b.T, a @ all_a.T], dim=1)
    l_b = torch.cat([b @ all_a.T, b @ all_b.T], dim=1)
    l_pos = (a * b).sum(dim=1)
    return l_a, l_b, l_pos, batch.pos_col + batch.size


def _without_column(logits: Tensor, col: Tensor) -> Tensor:
    """Detached copy of `logits` with −inf at column `col[i]` of row i (the estimator then ignores it)."""
    return logits.detach().scatter(1, col.unsqueeze(1), -math.inf)


class UnimodalSogCLRLoss(StatefulLoss):
    """SogCLR (`--loss_type dcl`): per anchor T·log g_i − l_pos with g_i the dataset mean of exp(l_ij/T) over
    negatives, both views summed, averaged over anchors.
    Paper: Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning" (SogCLR, ICML'22).

    One state slot per image (keyed by its dataset index), ℓ = log u in raw-cosine units, as in SOG1:
    each view updates ℓ from the same old value, ℓ^v ← logaddexp(log(1−γ) + ℓ, log γ + log ĝ^v) (ℓ^v = log ĝ^v
    on the image's first visit), its anchors use w_ij = exp(l_ij/T − ℓ^v), and the stored value is the
    average of the two estimates, log((u^a + u^b)/2). The surrogate −l_pos + (1/(2(B−1)))·Σ_neg w_ij·l_ij has
    the gradient T·∇log ĝ − ∇l_pos when u = ĝ (γ = 1).
    """

    def __init__(self, num_samples: int, temp: float = 0.1, gamma: float = 0.9,
                 state_init: str = "first_visit") -> None:
        super().__init__(num_samples, {"log_u": -math.inf}, gamma, state_init=state_init)
        if temp <= 0.0:
            raise ValueError(f"temperature must be positive, got {temp}")
        self.temp = float(temp)

    def _compute(self, batch: Batch) -> LossOutput:
        l_a, l_b, l_pos, self_col = view_logits(batch)
        norm = Normaliser(0.0, 1.0 / (2 * (batch.size - 1)))
        tau = l_a.new_full((l_a.shape[0],), self.temp)
        gamma = self.gamma
        d_a = self.direction(_without_column(l_a, self_col), batch, tau, "log_u", norm, gamma)
        d_b = self.direction(_without_column(l_b, self_col), batch, tau, "log_u", norm, gamma)
        skipped, _ = self.write(batch, {"log_u": torch.logaddexp(d_a.log_u, d_b.log_u) - math.log(2.0)})
        loss = (d_a.surrogate(l_a) + d_b.surrogate(l_b) - 2.0 * l_pos).mean()
        objective = (self.temp * (d_a.log_u + d_b.log_u) - 2.0 * l_pos.detach()).mean()
        return LossOutput(loss, {"objective": objective, "gamma": l_a.new_full((), gamma),
                                 "pos_sim": l_pos.detach().mean(), "nonfinite": skipped})


class NTXentLoss(ContrastiveLoss):
    """SimCLR (`--loss_type simclr`): per anchor −log softmax(l/T) at the positive over its 2B−1 candidates
    (positive included, own column excluded), both views summed, averaged over anchors.
    Paper: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (ICML'20).
    """

    def __init__(self, temp: float = 0.1) -> None:
        super().__init__()
        if temp <= 0.0:
            raise ValueError(f"temperature must be positive, got {temp}")
        self.temp = float(temp)

    def _compute(self, batch: Batch) -> LossOutput:
        l_a, l_b, l_pos, self_col = view_logits(batch)
        own = F.one_hot(self_col, l_a.shape[1]).bool()
        ce_a = F.cross_entropy((l_a / self.temp).masked_fill(own, -math.inf), batch.pos_col, reduction="none")
        ce_b = F.cross_entropy((l_b / self.temp).masked_fill(own, -math.inf), batch.pos_col, reduction="none")
        loss = (ce_a + ce_b).mean()
        return LossOutput(loss, {"objective": loss.detach(), "pos_sim": l_pos.detach().mean()})


def build_unimodal_loss(loss_type: str, num_samples: int, temp: float = 0.1, gamma: float = 0.9,
                        state_init: str = "first_visit") -> ContrastiveLoss:
    """`dcl` (SogCLR; alias `sogclr`) or `simclr` (NT-Xent; alias `cl`, the seed's name)."""
    name = LOSS_TYPE_ALIASES.get(loss_type, loss_type)
    if name == "dcl":
        return UnimodalSogCLRLoss(num_samples, temp=temp, gamma=gamma, state_init=state_init)
    if name == "simclr":
        return NTXentLoss(temp=temp)
    raise ValueError(f"loss_type must be one of {UNIMODAL_LOSS_TYPES} (aliases {sorted(LOSS_TYPE_ALIASES)}), "
                     f"got {loss_type!r}")
