"""Batch assembly for training: stack images, keep or tokenise captions, ids as int64 tensors."""
from collections.abc import Callable, Sequence
from typing import Any

import torch

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]
TrainItem = tuple[torch.Tensor, str, int, int]


def collate_image_text(batch: Sequence[TrainItem]) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    """(images [B,C,H,W], captions as a list of strings, image_index int64, pair_index int64)."""
    images, captions, image_index, pair_index = zip(*batch, strict=True)
    return (torch.stack(images), list(captions),
            torch.tensor(image_index, dtype=torch.int64), torch.tensor(pair_index, dtype=torch.int64))


class TokenizingCollate:
    """Collate that also tokenises the captions, so DataLoader workers do the tokenisation.

    `tokenizer` maps a list of strings to a dict of LongTensors and must be picklable.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: Sequence[TrainItem]) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor, torch.Tensor]:
        images, captions, image_index, pair_index = collate_image_text(batch)
        return images, self.tokenizer(captions), image_index, pair_index
