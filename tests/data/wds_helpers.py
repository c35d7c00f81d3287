"""Small img2dataset shard sets for the webdataset tests (a uniquely named module, not a conftest)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from dataset.demo.shards import Img2DatasetWriter

ROWS_PER_SHARD = 10


class ShardSet(NamedTuple):
    pattern: str                 # brace pattern of the shards
    keys: dict[int, str]         # integer key -> caption of every readable sample
    corrupt: list[int]           # keys whose image bytes do not decode
    data_size: int               # max key + 1


class CaptionLength:
    """A picklable stand-in tokenizer: the length of each caption, as `input_ids` [B, 1]."""

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([[len(text)] for text in texts], dtype=torch.int64)}


def jpeg(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shards(root: Path, num_shards: int = 4) -> ShardSet:
    """Shards of 10 rows, 8 readable samples each; rows 1 and 6 of a shard are download gaps, except that
    row 6 of shard 0 holds a corrupt image (so every shard still has 8 readable samples)."""
    keys: dict[int, str] = {}
    corrupt: list[int] = []
    with Img2DatasetWriter(root, ROWS_PER_SHARD, failure_rate=0.0) as writer:
        for row in range(num_shards * ROWS_PER_SHARD):
            if row == 6:
                corrupt.append(writer.add(b"\xff\xd8 not really a jpeg", "a broken picture"))
            elif row % 5 == 1:
                writer.skip()
            else:
                caption = f"caption of row {row}"
                keys[writer.add(jpeg(row), caption, (16, 16))] = caption
    last = f"{num_shards - 1:05d}"
    return ShardSet(f"{root}/{{00000..{last}}}.tar", keys, corrupt, max([*keys, *corrupt]) + 1)
