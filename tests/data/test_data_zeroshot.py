"""Zero-shot folders: labels by sorted folder, classnames/templates overrides and their errors."""
import pytest

from data_helpers import write_image
from dataset.errors import DataError
from dataset.transforms import build_zeroshot_transform
from dataset.zeroshot import ZeroShotDataset, load_zeroshot_classes


def _folders(root, names):
    for name in names:
        write_image(root / name / "0.jpg", mode="L")
    return root


def test_reads_shapes_demo(shapes_demo):
    dataset = ZeroShotDataset(shapes_demo.zeroshot_root, build_zeroshot_transform(16))
    classnames, templates = load_zeroshot_classes(shapes_demo.zeroshot_root)
    assert len(classnames) == len(dataset.classes) == 36 and classnames[0] == "red circle"
    assert all("{}" in template for template in templates)
    image, label = dataset[len(dataset) - 1]
    assert image.shape == (3, 16, 16) and label == 35


def test_labels_follow_sorted_folder_names(tmp_path):
    root = _folders(tmp_path, ["n02", "n10", "n01"])
    (root / "classnames.txt").write_text("first\nsecond\nthird\n")
    dataset = ZeroShotDataset(root)
    assert dataset.classes == ["n01", "n02", "n10"] and [label for _, label in dataset.samples] == [0, 1, 2]
    assert dataset[0][0].mode == "RGB"
    classnames, templates = load_zeroshot_classes(root)
    assert classnames == ["first", "second", "third"]
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."   # open_clip's prompts


def test_templates_override(tmp_path):
    root = _folders(tmp_path, ["a", "b"])
    (root / "classnames.txt").write_text("cat\ndog\n")
    (root / "templates.txt").write_text("a photo of a {}.\n\nart of the {}\n")
    assert load_zeroshot_classes(root) == (["cat", "dog"], ["a photo of a {}.", "art of the {}"])
    (root / "templates.txt").write_text("a photo of a {}.\nno placeholder\n")
    with pytest.raises(DataError, match="no placeholder"):
        load_zeroshot_classes(root)


def test_classnames_length_mismatch(tmp_path):
    root = _folders(tmp_path, ["a", "b", "c"])
    (root / "classnames.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="2 names but .* 3 class folders"):
        load_zeroshot_classes(root)


def test_without_classnames_needs_imagenet_folder_count(tmp_path):
    root = _folders(tmp_path, ["a", "b", "c"])
    with pytest.raises(DataError, match="3 class folders but no classnames.txt.*1000"):
        load_zeroshot_classes(root)


def test_imagenet_defaults_with_1000_folders(tmp_path):
    for i in range(1000):
        (tmp_path / f"n{i:08d}").mkdir()
    classnames, templates = load_zeroshot_classes(tmp_path)
    assert len(classnames) == 1000 and classnames[0] == "tench" and len(templates) == 80
    assert classnames[657] == classnames[744] == "missile" and classnames[836] == classnames[837] == "sunglasses"
    assert classnames[267] == "Standard Poodle"
    legacy, _ = load_zeroshot_classes(tmp_path, legacy_classnames=True)
    assert legacy[267] == "Standard Poodale" and legacy[:267] == classnames[:267] and legacy[268:] == classnames[268:]


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match="zero-shot folder not found"):
        ZeroShotDataset(tmp_path / "val")
    with pytest.raises(DataError, match="no class folders"):
        load_zeroshot_classes(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class"):
        ZeroShotDataset(tmp_path)
