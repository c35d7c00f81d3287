"""`--cache_teacher FILE`: the teacher tower's embeddings of every training pair, saved once for later runs.

The file is a float32 `.npy` of shape [num_samples, embed_dim]; row i holds pair id i (rows never seen, e.g.
skipped entries, stay 0). ProtoCLIP's external-teacher features are such a file.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from models.objectives.base import TEACHERS



@torch.no_grad()
def cache_teacher_embeddings(model: torch.nn.Module, loader: Iterable, teacher: str, num_samples: int,
                             device: torch.device, path: str | Path) -> int:
    """Encode every batch of `loader` with the `teacher` tower in eval mode and write the rows by pair id.

    Batches are `dataset.collate.Batch`es (texts tokenised). Returns the number of rows written.
    """
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    was_training = model.training
    model.eval()
    table = np.zeros((num_samples, model.embed_dim), dtype=np.float32)
    written = 0
    for images, tokens, pair_ids in loader:
        if teacher == "text":
            features = model.encode_text({name: value.to(device) for name, value in tokens.items()})
        else:
            features = model.encode_image(images.to(device))
        table[pair_ids.numpy()] = features.float().cpu().numpy()
        written += len(pair_ids)
    model.train(was_training)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # np.save on a handle keeps the exact name (no added .npy)
        np.save(handle, table)
    return written
