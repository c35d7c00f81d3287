"""Labelled demo images in the ImageNet folder layout (`<out>/train/<class>/`, `<out>/val/<class>/`), offline:
the unimodal demo data (unimodal_exps/build_demo_folders.py) and the bimodal demo's linear-probe folders.

* `fashion`: Fashion-MNIST (Debian `dataset-fashion-mnist`, read by bimodal_exps/dataset/demo/fashion.py):
  10 classes; train images from its train split, val images from its test split, the first k per class of
  a seeded permutation, resized to --image-size.
* `shapes`: the procedural zero-shot generator of the bimodal demo (one coloured shape on a noisy
  background): 36 colour-shape classes; train and val from different seeds.

The output is a function of (source, seed, sizes); a manifest records them, so an identical build is
skipped and a different one replaces only folders this builder wrote.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dataset.demo import fashion
from dataset.demo.shapes import ShapesSource
from dataset.errors import DataError

MANIFEST = "demo_folders.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class DemoSettings:
    """Everything the output depends on (recorded in the manifest)."""

    source: str
    seed: int
    train_per_class: int
    val_per_class: int
    image_size: int


def folder_name(classname: str) -> str:
    """`pair of trousers` -> `pair_of_trousers` (folder names without spaces)."""
    return classname.replace(" ", "_").replace("/", "_")


def _fashion_items(settings: DemoSettings, split: str) -> Iterator[tuple[str, Image.Image]]:
    """Fashion-MNIST items of `split`: a seeded permutation per class, first k kept."""
    images, labels = fashion.load_split("train" if split == "train" else "test")
    per_class = settings.train_per_class if split == "train" else settings.val_per_class
    rng = np.random.default_rng([settings.seed, SPLITS.index(split)])
    for label, name in enumerate(fashion.CLASSNAMES):
        members = rng.permutation(np.flatnonzero(labels == label))
        if per_class > len(members):
            raise DataError(f"Fashion-MNIST {split} has only {len(members)} images of class {name!r}")
        for index in members[:per_class]:
            image = Image.fromarray(images[index]).resize((settings.image_size,) * 2, Image.Resampling.BILINEAR)
            yield folder_name(name), image


def _shapes_items(settings: DemoSettings, split: str) -> Iterator[tuple[str, Image.Image]]:
    """Single-object shapes scenes from the zero-shot generator, one seed per split."""
    per_class = settings.train_per_class if split == "train" else settings.val_per_class
    source = ShapesSource(settings.seed * 2 + SPLITS.index(split), settings.image_size)
    for label, image in source.zeroshot_items(per_class):
        yield folder_name(source.classnames[label]), image


def items(settings: DemoSettings, split: str) -> Iterator[tuple[str, Image.Image]]:
    """(class folder, image) pairs of `split` in a deterministic order."""
    if settings.source == "fashion":
        return _fashion_items(settings, split)
    if settings.source == "shapes":
        return _shapes_items(settings, split)
    raise DataError(f"unknown demo source {settings.source!r} (choices: fashion, shapes)")


def resolve_source(requested: str) -> str:
    """`auto`: fashion when the Fashion-MNIST files are installed, else shapes."""
    if requested != "auto":
        return requested
    return "fashion" if fashion.available() else "shapes"


def _previous(out: Path) -> dict | None:
    """The previous build's manifest, {} if unreadable, None if there is none."""
    try:
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}


def build(out: Path, settings: DemoSettings) -> tuple[dict[str, int], bool]:
    """Write the folders unless an identical build exists; return ({split: images}, skipped)."""
    previous = _previous(out)
    if previous and previous.get("settings") == asdict(settings) and previous.get("counts"):
        return previous["counts"], True
    existing = [out / split for split in SPLITS if (out / split).exists()]
    if existing and previous is None:
        raise DataError(f"{existing[0]} exists and was not written by this builder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"settings": asdict(settings), "counts": None}) + "\n", encoding="utf-8")
    counts = {}
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
        numbers: dict[str, int] = {}
        for classname, image in items(settings, split):
            folder = out / split / classname
            folder.mkdir(parents=True, exist_ok=True)
            numbers[classname] = numbers.get(classname, 0) + 1
            image.convert("RGB").save(folder / f"{numbers[classname]:05d}.png")
        counts[split] = sum(numbers.values())
    (out / MANIFEST).write_text(json.dumps({"settings": asdict(settings), "counts": counts}, indent=2) + "\n",
                                encoding="utf-8")
    return counts, False
