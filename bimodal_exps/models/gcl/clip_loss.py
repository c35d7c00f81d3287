"""CLIP / InfoNCE (docs/losses.md §3)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Batch, ContrastiveLoss, LossOutput
from .candidates import SIDES, RowTerm

LEARNABLE_TEMP_RANGE = (0.001, 0.5)


class CLIPLoss(ContrastiveLoss):
    """½·[CE(image→text) + CE(text→image)] with the positive in a B-candidate normaliser.
    Paper: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (ICML'21).

    The temperature is fixed (`temp`) or, with `learnable_temp`, the parameter log τ (no weight
    decay) clamped to `temp_range` ([0.001, 0.5]) before every forward, i.e. after the previous optimiser step.
    """

    tileable = True

    def __init__(self, temp: float = 0.01, learnable_temp: bool = False, dist_mode: str = "autograd",
                 temp_range: tuple[float, float] = LEARNABLE_TEMP_RANGE) -> None:
        super().__init__(dist_mode)
        lo, hi = self.temp_range = temp_range
        if temp <= 0.0:
            raise ValueError(f"temp must be positive, got {temp}")
        self.learnable_temp = learnable_temp
        if learnable_temp:
            self.log_temp = nn.Parameter(torch.tensor(math.log(min(max(temp, lo), hi))))
        else:
            self.temp = float(temp)

    def param_groups(self) -> list[dict]:
        if not self.learnable_temp:
            return []
        return [{"params": [self.log_temp], "weight_decay": 0.0, "optimizer": "main"}]

    def _compute(self, batch: Batch) -> LossOutput:
        if self.learnable_temp:
            with torch.no_grad():
                self.log_temp.clamp_(*(math.log(v) for v in self.temp_range))
            tau = self.log_temp.to(batch.img.dtype).exp()
        else:
            tau = batch.img.new_full((), self.temp)
        loss, terms = 0.0, []
        for side in SIDES:
            # CE at the positive = LSE_j(h_ij/τ) (h_ii = 0): every candidate, the positive included, enters
            # through S_ij alone, so the candidate part covers all of them (docs/losses.md §11, positive kept)
            lse = self._logsumexp(batch, side, tau)
            loss = loss + 0.5 * lse.mean()
            terms.append(RowTerm(side, lse.detach(), tau.detach(), 0.5 / tau.detach(), mask_positive=False))
        t = tau.detach()
        return LossOutput(loss + self.candidate_part(batch, terms), {"tau_img": t, "tau_txt": t,
                                                                     "objective": loss.detach()})

    @staticmethod
    def _logsumexp(batch: Batch, side: str, tau: Tensor) -> Tensor:
        """[b] LSE_j(h_ij/τ) of the side's rows, with gradients to the features and τ; in blocks when tiled.

        Tiled: with p_ij = softmax_j(h_ij/τ) and r_i = Σ_j p_ij·h_ij (p detached), ∂LSE/∂h = p/τ and
        ∂LSE/∂τ = −r/τ², which is the gradient of r/τ at fixed p.
        """
        if not batch.tile:
            return torch.logsumexp(batch.differences[SIDES.index(side)] / tau, dim=1)
        pairs = batch.pairs(side, tau.detach().expand(batch.img.shape[0]), mask_positive=False)
        row_max, log_sum = pairs.logsumexp(batch.tile)
        scaled = pairs.weighted_h(row_max, -log_sum, batch.tile) / tau
        return (row_max + log_sum) + scaled - scaled.detach()
