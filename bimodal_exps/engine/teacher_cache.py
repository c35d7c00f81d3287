"""`--cache_teacher FILE`: the teacher tower's embeddings of every training pair, saved once for later runs.

The file is a float32 `.npy` of shape [num_samples, embed_dim]; row i holds pair id i (rows never seen, e.g.
skipped entries, stay 0). ProtoCLIP's external-teacher features are such a file.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from engine.evaluation import encode_pairs, eval_mode
from models.objectives.base import TEACHERS


@torch.no_grad()
def cache_teacher_embeddings(model: torch.nn.Module, loader: Iterable, teacher: str, num_samples: int,
                             device: torch.device, path: str | Path) -> int:
    """Encode every batch of `loader` with the `teacher` tower in eval mode and write the rows by pair id.

    Batches are `dataset.collate.Batch`es (texts tokenised). Returns the number of rows written.
    """
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    table = np.zeros((num_samples, model.embed_dim), dtype=np.float32)
    written = 0
    with eval_mode(model):
        for pair_ids, image, text in encode_pairs(model, loader, device, image=teacher == "image",
                                                  text=teacher == "text"):
            table[pair_ids.numpy()] = (text if teacher == "text" else image).float().cpu().numpy()
            written += len(pair_ids)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # np.save on a handle keeps the exact name (no added .npy)
        np.save(handle, table)
    return written
