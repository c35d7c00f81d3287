"""ITRA's optional SimCSE term: InfoNCE between two dropout views of the captions (docs/losses.md §15.11)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.gcl import collectives

SIMCSE_TEMP = 0.05


def simcse_loss(first: Tensor, second: Tensor) -> Tensor:
    """Mean over the local captions of CE(softmax(⟨firstᵢ, second_j⟩/0.05) over the global batch, j = i).

    The second view is all-gathered with gradient, so after DDP's average the gradient is the single-process
    one. Paper: Gao et al., "SimCSE: Simple Contrastive Learning of Sentence Embeddings" (EMNLP'21).
    """
    dtype = torch.promote_types(first.dtype, torch.float32)
    with torch.autocast(device_type=first.device.type, enabled=False):
        first, second = first.to(dtype), second.to(dtype)
        rank, _ = collectives.rank_and_world()
        candidates = collectives.all_gather_with_grad(second)
        b = first.shape[0]
        target = torch.arange(rank * b, (rank + 1) * b, device=first.device)
        return F.cross_entropy(first @ candidates.T / SIMCSE_TEMP, target)
