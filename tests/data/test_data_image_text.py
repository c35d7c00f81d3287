"""ImageTextDataset: read-back of demo data, index contract, validation and error messages."""
import logging

import pytest
import torch

from data_helpers import SMALL, write_image, write_json
from dataset.errors import DataError
from dataset.image_text import ImageTextDataset
from dataset.transforms import build_retrieval_transform


def test_reads_shapes_demo(shapes_demo):
    dataset = ImageTextDataset([shapes_demo.train_json], shapes_demo.train_images, build_retrieval_transform(16))
    assert len(dataset) == dataset.num_samples == dataset.num_images == SMALL["num_train"]
    assert dataset.num_skipped == 0
    image, caption, image_index, pair_index = dataset[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert isinstance(caption, str) and caption == caption.lower()
    assert image_index == pair_index == 3 and isinstance(pair_index, int)


def _entries(tmp_path, specs):
    """Write images for `specs` = [(file name or None, image_id)] and return JSON entries."""
    entries = []
    for name, image_id in specs:
        if name is not None and not (tmp_path / "img" / name).exists():
            write_image(tmp_path / "img" / name)
        entries.append({"image": name or "absent.jpg", "caption": f"Caption of {image_id}!", "image_id": image_id})
    return entries


def test_dense_image_index_by_first_appearance_and_pair_index(tmp_path):
    entries = _entries(tmp_path, [("a.jpg", "A"), ("b.jpg", 7), ("a.jpg", "A"), ("c.jpg", "C"), ("b.jpg", 7)])
    dataset = ImageTextDataset(write_json(tmp_path / "train.json", entries), tmp_path / "img")
    assert [item[2:] for item in dataset] == [(0, 0), (1, 1), (0, 2), (2, 3), (1, 4)]
    assert dataset[0][1] == "caption of a"
    assert dataset.num_images == 3 and dataset.num_samples == 5


def test_several_annotation_files_concatenate(tmp_path):
    first = write_json(tmp_path / "one.json", _entries(tmp_path, [("a.jpg", 1), ("b.jpg", 2)]))
    second = write_json(tmp_path / "two.json", _entries(tmp_path, [("b.jpg", 2), ("c.jpg", 3)]))
    dataset = ImageTextDataset([first, second], tmp_path / "img")
    assert [item[2:] for item in dataset] == [(0, 0), (1, 1), (1, 2), (2, 3)]


def test_skips_and_counts_missing_empty_and_incomplete_entries(tmp_path, caplog):
    entries = _entries(tmp_path, [("a.jpg", 1), (None, 2), ("empty.jpg", 3), ("d.jpg", 4), ("e.jpg", 5)])
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    del entries[3]["caption"]
    ann = write_json(tmp_path / "train.json", entries)
    with caplog.at_level(logging.WARNING):
        dataset = ImageTextDataset(ann, tmp_path / "img")
    assert dataset.num_skipped == 3 and len(dataset) == 2
    assert [item[2:] for item in dataset] == [(0, 0), (4, 4)]     # ids of later entries do not move
    assert dataset.num_samples == 5 and dataset.num_images == 5
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3" in warnings[0] and "absent.jpg" in warnings[0] and "empty" in warnings[0]


def test_strict_raises_naming_file_and_entry(tmp_path):
    ann = write_json(tmp_path / "train.json", _entries(tmp_path, [("a.jpg", 1), (None, 2)]))
    with pytest.raises(DataError, match=r"train\.json: entry 1: image file missing .*absent\.jpg"):
        ImageTextDataset(ann, tmp_path / "img", strict=True)


def test_malformed_json_names_file_line_and_column(tmp_path):
    ann = tmp_path / "broken.json"
    ann.write_text('[\n{"image": "a.jpg", "caption": "x"},\n{"image": "b.jpg" "caption": "y"}\n]\n')
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON at line 3, column \d+"):
        ImageTextDataset(ann, tmp_path / "img")


def test_top_level_must_be_an_array(tmp_path):
    ann = write_json(tmp_path / "obj.json", {"image": "a.jpg"})
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match="JSON array"):
        ImageTextDataset(ann, tmp_path / "img")


def test_missing_paths_point_to_demo_builder(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match=r"annotation file not found: .*nope\.json.*build_demo_data\.py"):
        ImageTextDataset(tmp_path / "nope.json", tmp_path / "img")
    ann = write_json(tmp_path / "train.json", [])
    with pytest.raises(DataError, match=r"image folder not found: .*nowhere.*build_demo_data\.py"):
        ImageTextDataset(ann, tmp_path / "nowhere")


def test_no_usable_entries_is_an_error(tmp_path):
    ann = write_json(tmp_path / "train.json", _entries(tmp_path, [(None, 1)]))
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match="no usable training entries"):
        ImageTextDataset(ann, tmp_path / "img")


def test_train_frac_keeps_a_prefix_with_original_ids(tmp_path):
    entries = _entries(tmp_path, [(f"{i}.jpg", i) for i in range(10)])
    dataset = ImageTextDataset(write_json(tmp_path / "train.json", entries), tmp_path / "img", train_frac=0.35)
    assert [item[3] for item in dataset] == [0, 1, 2]
    assert dataset.num_samples == 10


@pytest.mark.parametrize("mode, suffix",
                         [("L", "png"), ("RGBA", "png"), ("P", "png"), ("CMYK", "jpg"), ("I;16", "png")])
def test_any_image_mode_becomes_rgb(tmp_path, mode, suffix):
    write_image(tmp_path / "img" / f"x.{suffix}", mode=mode)
    ann = write_json(tmp_path / "train.json", [{"image": f"x.{suffix}", "caption": "c", "image_id": 0}])
    image = ImageTextDataset(ann, tmp_path / "img", build_retrieval_transform(8))[0][0]
    assert image.shape == (3, 8, 8)


def test_truncated_jpeg_is_tolerated(tmp_path):
    path = write_image(tmp_path / "img" / "t.jpg", size=64)
    path.write_bytes(path.read_bytes()[:-200])
    ann = write_json(tmp_path / "train.json", [{"image": "t.jpg", "caption": "c", "image_id": 0}])
    assert ImageTextDataset(ann, tmp_path / "img", build_retrieval_transform(8))[0][0].shape == (3, 8, 8)
