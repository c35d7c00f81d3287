"""Demo builders: layout and formats, determinism, held-out pairs, skip/overwrite rules, CLI."""
import gzip
import hashlib
import json

import numpy as np
import pytest

from data_helpers import SMALL, demo_settings
from dataset.demo import build as build_module
from dataset.demo import fashion
from dataset.demo.build import build, main
from dataset.demo.shapes import COLOUR_NAMES, HELD_OUT, SHAPES
from dataset.demo.writer import Layout
from dataset.errors import DataError
from dataset.image_text import ImageTextDataset
from dataset.retrieval import RetrievalDataset
from dataset.zeroshot import ZeroShotDataset, load_zeroshot_classes

needs_fashion = pytest.mark.skipif(not fashion.available(),
                                   reason=f"Debian package {fashion.DEBIAN_PACKAGE} not installed")


def _digest(root):
    """Hash of every file under `root` (relative path and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _read_back(layout: Layout):
    train = ImageTextDataset(layout.train_json, layout.train_images)
    retrieval = RetrievalDataset(layout.coco_json, layout.coco_images)
    zeroshot = ZeroShotDataset(layout.zeroshot_root)
    classnames, templates = load_zeroshot_classes(layout.zeroshot_root)
    return train, retrieval, zeroshot, classnames, templates


def test_shapes_layout_and_read_back(shapes_demo):
    train, retrieval, zeroshot, classnames, templates = _read_back(shapes_demo)
    assert len(train) == SMALL["num_train"] and train.num_skipped == 0
    assert len(retrieval) == SMALL["num_val"] and len(retrieval.text) == 5 * SMALL["num_val"]
    assert len(classnames) == len(SHAPES) * len(COLOUR_NAMES) == len(zeroshot.classes)
    assert len(zeroshot) == SMALL["num_zeroshot_per_class"] * len(classnames)
    assert templates and all("{}" in t for t in templates)
    assert train[0][0].size == (SMALL["image_size"], SMALL["image_size"])
    entry = json.loads(shapes_demo.train_json.read_text())[0]
    assert set(entry) == {"image", "caption", "image_id"}
    assert (shapes_demo.out / "SOURCE").read_text() == "shapes\n"


def test_shapes_held_out_pairs_only_in_zero_shot(shapes_demo, tmp_path):
    layout = Layout(tmp_path)
    build(layout, demo_settings(num_train=400, num_val=40))
    captions = [entry["caption"] for entry in json.loads(layout.train_json.read_text())]
    captions += [c for entry in json.loads(layout.coco_json.read_text()) for c in entry["caption"]]
    for shape, colour in HELD_OUT:
        assert not any(f"{colour} {shape}" in caption for caption in captions), (colour, shape)
    mentioned = {(s, c) for s in SHAPES for c in COLOUR_NAMES if any(f"{c} {s}" in cap for cap in captions)}
    assert mentioned == {(s, c) for s in SHAPES for c in COLOUR_NAMES} - HELD_OUT
    classnames, _ = load_zeroshot_classes(layout.zeroshot_root)
    assert {f"{colour} {shape}" for shape, colour in HELD_OUT} <= set(classnames)


def test_shapes_deterministic_given_seed(shapes_demo, tmp_path):
    again, other = Layout(tmp_path / "again"), Layout(tmp_path / "other")
    build(again, demo_settings())
    build(other, demo_settings(seed=1))
    assert _digest(again.out) == _digest(shapes_demo.out)
    assert _digest(other.out) != _digest(shapes_demo.out)


def test_rerun_skips_and_changed_settings_rebuild(tmp_path):
    layout = Layout(tmp_path)
    assert build(layout, demo_settings(num_train=10))[1] is False
    stamp = layout.train_json.stat().st_mtime_ns
    counts, skipped = build(layout, demo_settings(num_train=10))
    assert skipped and counts["train_pairs"] == 10 and layout.train_json.stat().st_mtime_ns == stamp
    counts, skipped = build(layout, demo_settings(num_train=5))
    assert not skipped and len(list(layout.train_images.iterdir())) == 5


def test_refuses_to_overwrite_foreign_data(tmp_path):
    layout = Layout(tmp_path)
    layout.train_json.parent.mkdir(parents=True)
    layout.train_json.write_text("[]")
    with pytest.raises(DataError, match="not written by the demo builder.*--force"):
        build(layout, demo_settings())
    assert layout.train_json.read_text() == "[]"
    build(layout, demo_settings(), force=True)
    assert len(json.loads(layout.train_json.read_text())) == SMALL["num_train"]


def test_cli_auto_falls_back_to_shapes_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fashion, "available", lambda directory=None: False)
    monkeypatch.setattr(build_module, "_try_install_fashion", lambda: False)
    argv = ["--source", "auto", "--out", str(tmp_path), "--num_train", "6", "--num_val", "2",
            "--num_zeroshot_per_class", "1", "--image_size", "16"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "fashion source unavailable" in lines[0]
    assert lines[1].startswith(f"shapes demo data at {tmp_path} wrote in")
    assert (tmp_path / "SOURCE").read_text() == "shapes\n"


def test_cli_reports_data_errors_in_one_line(tmp_path, capsys):
    (tmp_path / "clip_train").mkdir()
    (tmp_path / "clip_train" / "coco_val.json").write_text("[]")
    assert main(["--source", "shapes", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_read_idx_parses_the_mnist_format(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in images.shape)
    with gzip.open(tmp_path / "x.gz", "wb") as handle:
        handle.write(header + images.tobytes())
    assert np.array_equal(fashion.read_idx(tmp_path / "x.gz"), images)
    with gzip.open(tmp_path / "bad.gz", "wb") as handle:
        handle.write(b"\0\0\x0d\x01\0\0\0\x01abcd")
    with pytest.raises(DataError, match="IDX"):
        fashion.read_idx(tmp_path / "bad.gz")


def test_fashion_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion.FashionSource(0, 32, directory=tmp_path)


@needs_fashion
def test_fashion_build_read_back_and_determinism(tmp_path):
    first, second = Layout(tmp_path / "a"), Layout(tmp_path / "b")
    settings = demo_settings("fashion", num_train=30, num_val=6, num_zeroshot_per_class=3)
    build(first, settings)
    build(second, settings)
    assert _digest(first.out) == _digest(second.out)
    train, retrieval, zeroshot, classnames, _ = _read_back(first)
    assert len(train) == 30 and len(retrieval.text) == 30 and len(zeroshot) == 30
    assert classnames == list(fashion.CLASSNAMES)
    captions = [train[i][1] for i in range(len(train))]
    assert any(" in the top left" in c or " at the top left" in c or "upper left" in c for c in captions)
    failed = Layout(tmp_path / "c")
    with pytest.raises(DataError, match="num_zeroshot_per_class"):
        build(failed, demo_settings("fashion", num_zeroshot_per_class=501))
    assert build(failed, settings)[1] is False   # the failed build is recognised as ours and redone
