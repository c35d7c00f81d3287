"""SigLIP: the pairwise sigmoid loss with a learnable scale and bias (docs/losses.md §16)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, ContrastiveLoss, LossOutput
from .tiled import positive_mask, row_sum

LOGIT_SCALE_INIT = math.log(10.0)  # t = e^{t'} = 10
LOGIT_BIAS_INIT = -10.0


def _pair_terms(s: Tensor, rows: slice, cols: slice, pos_col: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """−log σ(y_ij·(t·S_ij + b)) of a block, y = +1 at each row's own pair and −1 elsewhere."""
    labels = positive_mask(pos_col, rows, cols).to(s.dtype) * 2.0 - 1.0
    return -F.logsigmoid(labels * (scale * s + bias))


class SigLIPLoss(ContrastiveLoss):
    """(1/B)·Σ_{i,j} −log σ(y_ij·(t·⟨e_i, z_j⟩ + b)) over all B×B pairs of the global batch, as OpenCLIP's SigLipLoss.
    Paper: Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP, ICCV'23).

    t = exp(logit_scale) (init 10) and b = logit_bias (init −10) are learned in the main optimiser without
    weight decay. Each rank sums its local image rows against the gathered texts and divides by its b,
    so DDP's average gives the global loss; in `--dist_mode fastclip` the local texts' gradient from every
    rank's images is rebuilt locally from z_loc·Êᵀ (no collective in the backward, docs/losses.md §11).
    """

    tileable = True

    def __init__(self, dist_mode: str = "autograd") -> None:
        super().__init__(dist_mode)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.logit_bias = nn.Parameter(torch.tensor(LOGIT_BIAS_INIT))

    def param_groups(self) -> list[dict]:
        return [{"params": [self.logit_scale, self.logit_bias], "weight_decay": 0.0, "optimizer": "main"}]

    @staticmethod
    def _rows(batch: Batch, anchors: Tensor, cands: Tensor, dense: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        """[b] Σ_j of the pair terms of `anchors` against the global `cands` (`dense` = their [b, B] product)."""
        if not batch.tile:
            return _pair_terms(dense, slice(None), slice(0, cands.shape[0]), batch.pos_col, scale, bias).sum(dim=1)
        fn = lambda s, rows, cols, t, b: _pair_terms(s, rows, cols, batch.pos_col, t, b)  # noqa: E731
        return row_sum(fn, anchors, cands, (scale, bias), batch.tile)

    def _compute(self, batch: Batch) -> LossOutput:
        dtype = batch.img.dtype
        scale, bias = self.logit_scale.to(dtype).exp(), self.logit_bias.to(dtype)
        sim_img, sim_txt = batch.similarities if not batch.tile else (None, None)
        loss = self._rows(batch, batch.img, batch.all_txt, sim_img, scale, bias).mean()
        objective = loss.detach()
        if batch.split:  # the local texts as candidates of every rank's images; t, b get their gradient above
            cand = self._rows(batch, batch.txt, batch.all_img, sim_txt, scale.detach(), bias.detach()).mean()
            loss = loss + cand - cand.detach()
        tau = 1.0 / scale.detach()
        return LossOutput(loss, {"tau_img": tau, "tau_txt": tau, "objective": objective,
                                 "logit_bias": bias.detach()})
