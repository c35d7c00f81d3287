"""Writes a demo source to disk in the layout of the README's reference commands, with the real annotation formats.

<out>/clip_train/cc3m_train_subset.json      training pairs (clip_train/README.md)
<out>/clip_train/coco_val.json               retrieval captions, 5 per image (clip_train/README.md)
<out>/datasets/cc3m_subset_100k/             training images
<out>/datasets/mscoco_val/mscoco_val2014_subset_5k/   retrieval images
<out>/datasets/imagenet/val/<class_dir>/     zero-shot images + classnames.txt, templates.txt
<out>/datasets/cc3m_wds/                     with `Layout(webdataset=True)`: the same training pairs as
                                             img2dataset shards (`dataset.demo.shards`)
<out>/datasets/demo_manifest.json           settings, and counts once the build is complete
<out>/SOURCE                                 the source name
"""
import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from dataset.demo.shards import Img2DatasetWriter, ShardSummary

CAPTIONS_PER_IMAGE = 5
DEFAULT_SHARD_SIZE = 1000
JPEG_QUALITY = 90


class DemoSource(Protocol):
    """What a demo source provides; each generator is deterministic given the source's seed."""

    name: str
    classnames: Sequence[str]
    templates: Sequence[str]

    def train_pairs(self, count: int) -> Iterator[tuple[Image.Image, str]]: ...

    def retrieval_items(self, count: int, captions_per_image: int) -> Iterator[tuple[Image.Image, list[str]]]: ...

    def zeroshot_items(self, per_class: int) -> Iterator[tuple[int, Image.Image]]: ...


@dataclass(frozen=True)
class Layout:
    """The reference commands' paths under an output root (`webdataset`: the training shards are an output too)."""

    out: Path
    webdataset: bool = False

    @property
    def train_json(self) -> Path:
        return self.out / "clip_train" / "cc3m_train_subset.json"

    @property
    def coco_json(self) -> Path:
        return self.out / "clip_train" / "coco_val.json"

    @property
    def train_images(self) -> Path:
        return self.out / "datasets" / "cc3m_subset_100k"

    @property
    def coco_images(self) -> Path:
        return self.out / "datasets" / "mscoco_val" / "mscoco_val2014_subset_5k"

    @property
    def zeroshot_root(self) -> Path:
        return self.out / "datasets" / "imagenet" / "val"

    @property
    def linear_root(self) -> Path:
        """Labelled train/ and val/ class folders for the linear probe and k-NN (`--linear_datasets`)."""
        return self.out / "datasets" / "demo_linear"

    @property
    def train_shards(self) -> Path:
        return self.out / "datasets" / "cc3m_wds"

    @property
    def manifest(self) -> Path:
        return self.out / "datasets" / "demo_manifest.json"

    @property
    def source_file(self) -> Path:
        """One line naming the source (`shapes`/`fashion`), for scripts that pick a config by it."""
        return self.out / "SOURCE"

    def outputs(self) -> list[Path]:
        """Every file or folder the builder writes (and may replace)."""
        paths = [self.train_json, self.coco_json, self.train_images, self.coco_images, self.zeroshot_root,
                 self.linear_root]
        return paths + [self.train_shards] if self.webdataset else paths


def class_folder(label: int, name: str, num_classes: int) -> str:
    """Folder name whose lexicographic order is the label order, e.g. `03_red-circle`."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{label:0{len(str(num_classes - 1))}d}_{slug}"


def write_json_lines_array(path: Path, entries: list[dict[str, Any]]) -> None:
    """A JSON array with one entry per line (readable, and parse errors point at an entry)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("[\n" + ",\n".join(json.dumps(entry) for entry in entries) + "\n]\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_outputs(layout: Layout) -> None:
    """Delete the files and folders a build writes (not the manifest, which marks them as ours)."""
    for path in layout.outputs():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_demo(source: DemoSource, layout: Layout, num_train: int, num_val: int,
               num_zeroshot_per_class: int, shard_size: int = DEFAULT_SHARD_SIZE) -> dict[str, int]:
    """Write all three splits (zero-shot first: it is the split whose size a source may reject).

    With `layout.webdataset` the training pairs are also written as shards of `shard_size` rows, with
    the same JPEG bytes as the image folder, so both formats hold the same data.
    """
    for folder in (layout.train_images, layout.coco_images, layout.zeroshot_root, layout.train_json.parent):
        folder.mkdir(parents=True, exist_ok=True)

    folders = [class_folder(label, name, len(source.classnames)) for label, name in enumerate(source.classnames)]
    for folder in folders:
        (layout.zeroshot_root / folder).mkdir(exist_ok=True)
    counts = [0] * len(folders)
    for label, image in source.zeroshot_items(num_zeroshot_per_class):
        image.save(layout.zeroshot_root / folders[label] / f"{counts[label]:04d}.jpg", quality=JPEG_QUALITY)
        counts[label] += 1
    (layout.zeroshot_root / "classnames.txt").write_text("".join(f"{n}\n" for n in source.classnames), encoding="utf-8")
    (layout.zeroshot_root / "templates.txt").write_text("".join(f"{t}\n" for t in source.templates), encoding="utf-8")

    coco = []
    for index, (image, captions) in enumerate(source.retrieval_items(num_val, CAPTIONS_PER_IMAGE)):
        name = f"{index:05d}.jpg"
        image.save(layout.coco_images / name, quality=JPEG_QUALITY)
        coco.append({"image": name, "caption": captions, "image_id": index})
    write_json_lines_array(layout.coco_json, coco)

    train = []
    shards = Img2DatasetWriter(layout.train_shards, shard_size) if layout.webdataset else None
    for index, (image, caption) in enumerate(source.train_pairs(num_train)):
        name = f"{index:06d}.jpg"
        image.save(layout.train_images / name, quality=JPEG_QUALITY)
        train.append({"image": name, "caption": caption, "image_id": index})
        if shards is not None:
            shards.add((layout.train_images / name).read_bytes(), caption, image.size)
    write_json_lines_array(layout.train_json, train)
    result = {"train_pairs": len(train), "retrieval_images": len(coco),
              "retrieval_captions": len(coco) * CAPTIONS_PER_IMAGE,
              "zeroshot_classes": len(folders), "zeroshot_images": sum(counts)}
    if shards is not None:
        summary: ShardSummary = shards.close()
        result.update(train_shards=summary.shards, train_shard_samples=summary.samples,
                      train_data_size=summary.data_size)
    return result
