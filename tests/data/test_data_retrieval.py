"""RetrievalDataset: flattened captions and the img2txt / txt2img maps."""
import pytest
import torch

from data_helpers import SMALL, write_image, write_json
from dataset.errors import DataError
from dataset.retrieval import RetrievalDataset
from dataset.transforms import build_retrieval_transform


def test_one_to_seven_captions_per_image(tmp_path):
    entries = []
    for i, count in enumerate(range(1, 8)):
        write_image(tmp_path / "img" / f"{i}.jpg")
        captions = [f"Image {i}, caption {k}." for k in range(count)]
        entries.append({"image": f"{i}.jpg", "caption": captions[0] if count == 1 else captions})
    dataset = RetrievalDataset(write_json(tmp_path / "coco.json", entries), tmp_path / "img",
                               build_retrieval_transform(8))
    assert len(dataset) == 7 and len(dataset.text) == sum(range(1, 8)) == len(dataset.txt2img)
    assert [len(ids) for ids in dataset.img2txt] == list(range(1, 8))
    flat = [j for ids in dataset.img2txt for j in ids]
    assert flat == list(range(len(dataset.text)))
    for i, ids in enumerate(dataset.img2txt):
        assert all(dataset.txt2img[j] == i for j in ids)
        assert all(dataset.text[j].startswith(f"image {i} caption") for j in ids)
    image, index = dataset[4]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and index == 4


def test_reads_shapes_demo(shapes_demo):
    dataset = RetrievalDataset(shapes_demo.coco_json, shapes_demo.coco_images)
    assert len(dataset) == SMALL["num_val"] and len(dataset.text) == 5 * SMALL["num_val"]
    assert dataset.img2txt[1] == [5, 6, 7, 8, 9]


def test_falls_back_to_basename(tmp_path):
    write_image(tmp_path / "img" / "COCO_val2014_1.jpg")
    ann = write_json(tmp_path / "coco.json", [{"image": "val2014/COCO_val2014_1.jpg", "caption": ["a"]}])
    assert RetrievalDataset(ann, tmp_path / "img").image == [str(tmp_path / "img" / "COCO_val2014_1.jpg")]


@pytest.mark.parametrize("entry, message", [
    ({"image": "missing.jpg", "caption": ["a"]}, "entry 1: image file missing"),
    ({"image": "0.jpg", "caption": []}, "entry 1: 'caption' must be"),
    ({"caption": ["a"]}, "entry 1: no 'image'"),
])
def test_bad_entries_are_errors(tmp_path, entry, message):
    write_image(tmp_path / "img" / "0.jpg")
    ann = write_json(tmp_path / "coco.json", [{"image": "0.jpg", "caption": "fine"}, entry])
    with pytest.raises(DataError, match=message):
        RetrievalDataset(ann, tmp_path / "img")


def test_missing_annotation_file_points_to_demo_builder(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match="build_demo_data"):
        RetrievalDataset(tmp_path / "coco_val.json", tmp_path / "img")
