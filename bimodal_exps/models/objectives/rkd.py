"""Relational knowledge distillation: distance and angle structure of the global batch (docs/losses.md §15)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .base import DistillLoss

ANGLE_CHUNK_ELEMENTS = 1 << 24  # ≈ 64 MB of fp32 per chunk of the B³ angle term


def normalised_distances(x: Tensor) -> Tensor:
    """Pairwise Euclidean distances (diagonal 0, floor 1e-12 under the root) over their off-diagonal mean."""
    sq = x.pow(2).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(1e-12).sqrt()
    off = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    dist = dist * off
    return dist / dist[off].mean()


def _angles(x: Tensor, anchors: Tensor) -> Tensor:
    """A_abc = ⟨e_ab, e_ac⟩ for the anchor rows a (unit edges e_ab = (x_b − x_a)/‖x_b − x_a‖, zero when a = b)."""
    edges = F.normalize(x[None, :, :] - x[anchors, None, :], dim=2, eps=1e-12)
    return edges @ edges.transpose(1, 2)


def _angle_chunk(x: Tensor, y: Tensor, anchors: Tensor) -> Tensor:
    return F.smooth_l1_loss(_angles(y, anchors), _angles(x, anchors), beta=1.0, reduction="sum")


class RKDLoss(DistillLoss):
    """w_d·mean ψ(D^s − D^t) over B² pairs + w_a·mean ψ(A^s − A^t) over B³ triplets (ψ = smooth-L1, β = 1).

    The angle term is computed in chunks of anchors, each recomputed in the backward (activation
    checkpointing), so its memory is O(chunk·B·max(B, d)) instead of O(B³); its time stays O(B³·d), slow
    beyond B ≈ 1,024. Paper: Park et al., "Relational Knowledge Distillation" (CVPR'19).
    """

    def __init__(self, w_rkd_d: float = 0.5, w_rkd_a: float = 1.0, **kw) -> None:
        super().__init__(**kw)
        if w_rkd_d < 0 or w_rkd_a < 0:
            raise ValueError(f"--w_rkd_d and --w_rkd_a must be >= 0, got {w_rkd_d} and {w_rkd_a}")
        self.w_d, self.w_a = float(w_rkd_d), float(w_rkd_a)

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        b, d = t.shape
        stats, value = {}, t.new_zeros(())
        if self.w_d > 0:
            dist = F.smooth_l1_loss(normalised_distances(s), normalised_distances(t), beta=1.0)
            value, stats["rkd_distance"] = value + self.w_d * dist, dist
        if self.w_a > 0:
            chunk = max(1, ANGLE_CHUNK_ELEMENTS // (b * max(b, d)))
            total = t.new_zeros(())
            for start in range(0, b, chunk):
                anchors = torch.arange(start, min(b, start + chunk), device=t.device)
                total = total + checkpoint(_angle_chunk, t, s, anchors, use_reentrant=False)
            angle = total / b ** 3
            value, stats["rkd_angle"] = value + self.w_a * angle, angle
        return value, stats
