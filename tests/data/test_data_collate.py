"""Training collate: stacked images, captions kept or tokenised (also inside DataLoader workers)."""
import pickle

import torch
from torch.utils.data import DataLoader

from data_helpers import SMALL
from dataset.collate import TokenizingCollate, collate_image_text
from dataset.image_text import ImageTextDataset
from dataset.transforms import build_train_transform


class LengthTokenizer:
    """Stand-in for a real tokenizer: one token per character, padded."""

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        width = max(len(text) for text in texts)
        ids = torch.tensor([[ord(c) for c in text] + [0] * (width - len(text)) for text in texts])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def _batch():
    return [(torch.zeros(3, 4, 4), "a cat", 0, 5), (torch.ones(3, 4, 4), "two dogs", 0, 6)]


def test_collate_keeps_captions():
    batch = collate_image_text(_batch())
    assert batch.images.shape == (2, 3, 4, 4) and batch.texts == ["a cat", "two dogs"]
    assert batch.ids.dtype == torch.int64 and batch.ids.tolist() == [5, 6]             # pair ids, not image ids


def test_tokenizing_collate_is_picklable_and_tokenises():
    collate = pickle.loads(pickle.dumps(TokenizingCollate(LengthTokenizer())))
    batch = collate(_batch())
    assert batch.texts["input_ids"].shape == (2, 8) and batch.texts["attention_mask"].sum().item() == 13
    assert batch.ids.tolist() == [5, 6]


def test_dataloader_workers_tokenise(shapes_demo):
    dataset = ImageTextDataset(shapes_demo.train_json, shapes_demo.train_images, build_train_transform(16))
    loader = DataLoader(dataset, batch_size=8, num_workers=1, collate_fn=TokenizingCollate(LengthTokenizer()))
    batches = list(loader)
    assert len(batches) == SMALL["num_train"] // 8
    assert batches[0].images.shape == (8, 3, 16, 16) and batches[0].texts["input_ids"].dtype == torch.int64
    assert torch.cat([batch.ids for batch in batches]).tolist() == list(range(SMALL["num_train"]))
