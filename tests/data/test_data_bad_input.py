"""Bad training input with a defined outcome: files that fail at load time raise one-line DataErrors naming
the file, odd entries are skipped and counted, odd captions tokenise to the usual shape."""
import os

import pytest
import torch
from torch.utils.data import DataLoader

import dataset.images as images
from data_helpers import write_image, write_json
from dataset.collate import TokenizingCollate
from dataset.errors import DataError, without_worker_traceback
from dataset.image_text import ImageTextDataset
from dataset.transforms import build_retrieval_transform
from models.config import tiny_model_config
from models.factory import create_tokenizer


def one_image_dataset(tmp_path, name="x.jpg", caption="a caption"):
    ann = write_json(tmp_path / "train.json", [{"image": name, "caption": caption, "image_id": 0}])
    return ImageTextDataset(ann, tmp_path / "img", build_retrieval_transform(8))


def test_undecodable_file_passes_start_up_and_fails_at_load_naming_it(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.jpg").write_text("this is not a JPEG")
    dataset = one_image_dataset(tmp_path)
    assert len(dataset) == 1 and dataset.num_skipped == 0                    # only size is checked at start-up
    with pytest.raises(DataError, match=r"cannot load image .*img/x\.jpg: cannot identify image file"):
        dataset[0]


def test_image_deleted_after_start_up_fails_at_load_naming_it(tmp_path):
    path = write_image(tmp_path / "img" / "x.jpg")
    dataset = one_image_dataset(tmp_path)
    os.remove(path)
    with pytest.raises(DataError, match=r"cannot load image .*img/x\.jpg: No such file or directory"):
        dataset[0]


def test_image_over_the_pixel_limit_fails_before_decoding(tmp_path, monkeypatch):
    write_image(tmp_path / "img" / "x.png", size=64)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 63 * 64)
    with pytest.raises(DataError, match=r"img/x\.png has 64×64 pixels, over the limit of 4032"):
        one_image_dataset(tmp_path, "x.png")[0]
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 64 * 64)
    assert one_image_dataset(tmp_path, "x.png")[0][0].shape == (3, 8, 8)


def test_error_in_a_loader_worker_reduces_to_its_one_line_message(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.jpg").write_bytes(b"\xff\xd8 broken")
    loader = DataLoader(one_image_dataset(tmp_path), num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)                                    # what DataLoader re-raises
    message = without_worker_traceback(str(info.value))
    assert message.startswith("cannot load image ") and "x.jpg" in message and "\n" not in message
    assert without_worker_traceback("plain message") == "plain message"


@pytest.mark.parametrize("entry, reason", [
    ({"caption": "no image key"}, "no 'image' path"),
    (["not", "an", "object"], "entry is a list, not an object"),
    ({"image": "a.jpg", "caption": 7}, "no 'caption' string"),
])
def test_malformed_entries_are_skipped_and_counted_or_strict_errors(tmp_path, entry, reason):
    write_image(tmp_path / "img" / "a.jpg")
    ann = write_json(tmp_path / "train.json", [{"image": "a.jpg", "caption": "fine", "image_id": 0}, entry])
    dataset = ImageTextDataset(ann, tmp_path / "img")
    assert len(dataset) == 1 and dataset.num_skipped == 1 and dataset.num_samples == 2
    with pytest.raises(DataError, match=rf"train\.json: entry 1: {reason}"):
        ImageTextDataset(ann, tmp_path / "img", strict=True)


def test_empty_very_long_and_non_ascii_captions_tokenise_to_the_usual_shape(tmp_path):
    write_image(tmp_path / "img" / "a.jpg")
    captions = ["", " ".join(["word"] * 5000), "Ein Café in Zürich — 東京の猫 🐈 naïve"]
    ann = write_json(tmp_path / "train.json", [{"image": "a.jpg", "caption": c, "image_id": 0} for c in captions])
    dataset = ImageTextDataset(ann, tmp_path / "img", build_retrieval_transform(8), max_words=30)
    assert len(dataset) == 3
    texts = [dataset[i][1] for i in range(3)]
    assert texts[0] == "" and texts[1] == " ".join(["word"] * 30)
    assert texts[2] == "ein café in zürich — 東京の猫 🐈 naïve"
    images_, tokens, pair_ids = TokenizingCollate(create_tokenizer(tiny_model_config()))(
        [dataset[i] for i in range(3)])
    assert tokens["input_ids"].shape == (3, 32) and images_.shape == (3, 3, 8, 8)
    assert torch.equal(pair_ids, torch.tensor([0, 1, 2]))
    assert (tokens["input_ids"][2] != 0).sum() > 4                           # the non-ASCII text became tokens
