"""Batch assembly for training: stack images, keep or tokenise captions, pair ids as an int64 tensor."""
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

Tokenizer = Callable[[list[str]], dict[str, torch.Tensor]]
TrainItem = tuple[torch.Tensor, str, int, int]   # (image, caption, image_index, pair_index)


class Batch(NamedTuple):
    """One training batch: images [B,C,H,W], texts (captions, or their tokens as a dict of LongTensors) and the
    int64 ids keying the per-sample loss state (the pair ids)."""

    images: torch.Tensor
    texts: list[str] | dict[str, torch.Tensor]
    ids: torch.Tensor


def collate_image_text(batch: Sequence[TrainItem]) -> Batch:
    """Stack the images, keep the captions as a list of strings, the pair indices as ids (image index dropped)."""
    images, captions, _, pair_index = zip(*batch, strict=True)
    return Batch(torch.stack(images), list(captions), torch.tensor(pair_index, dtype=torch.int64))


class TokenizingCollate:
    """Collate that also tokenises the captions, so DataLoader workers do the tokenisation.

    `tokenizer` maps a list of strings to a dict of LongTensors and must be picklable.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: Sequence[TrainItem]) -> Batch:
        collated = collate_image_text(batch)
        return collated._replace(texts=self.tokenizer(collated.texts))
