"""Write clip.py's evaluation sets in CLIP_benchmark's webdataset layout, for `clip_benchmark eval --dataset wds/...`.

    python bimodal_exps/clip_benchmark_data.py --out wds --coco_file demo_data/clip_train/coco_val.json \
        --coco_image_root demo_data/datasets/mscoco_val/mscoco_val2014_subset_5k \
        --zeroshot_folder demo_data/datasets/imagenet/val
    clip_benchmark eval --dataset wds/retrieval --dataset_root 'wds/{dataset}' --task zeroshot_retrieval ...

Each set becomes `OUT/<name>/test/0.tar` + `test/nshards.txt` + `dataset_type.txt`, and for zero-shot also
`classnames.txt` and `zeroshot_classification_templates.txt` (CLIP_benchmark's `{c}` placeholder). Images are
stored as lossless PNG of the RGB pixels clip.py decodes; captions as clip.py evaluates them (lower-cased, cut to
`--max_words`), so both programs see the same inputs (README "Export to OpenCLIP and CLIP_benchmark").
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cli.ranges import COUNT  # noqa: E402
from dataset.errors import DataError  # noqa: E402
from dataset.images import load_rgb  # noqa: E402
from dataset.retrieval import RetrievalDataset  # noqa: E402
from dataset.zeroshot import ZeroShotDataset, load_zeroshot_classes  # noqa: E402

SPLIT = "test"  # the split CLIP_benchmark's eval reads by default


def write_split(samples: Iterable[dict[str, Any]], folder: Path, dataset_type: str) -> int:
    """`folder/test/0.tar` (one shard, in order) + `nshards.txt`, and `folder/dataset_type.txt`; the sample count."""
    import webdataset as wds  # lazy: only this tool needs it at import time

    split = folder / SPLIT
    split.mkdir(parents=True, exist_ok=True)
    count = 0
    with wds.TarWriter(str(split / "0.tar")) as sink:
        for count, sample in enumerate(samples, start=1):
            sink.write({"__key__": f"s{count - 1:08d}", **sample})
    (split / "nshards.txt").write_text("1\n")
    (folder / "dataset_type.txt").write_text(dataset_type + "\n")
    return count


def write_retrieval(ann_file: str | Path, image_root: str | Path, folder: Path, max_words: int = 30) -> int:
    """A COCO-style retrieval set (clip.py's `--val_coco_file` + `--coco_image_root`) as a `retrieval` wds set."""
    dataset = RetrievalDataset(ann_file, image_root, transform=None, max_words=max_words)
    samples = ({"png": load_rgb(path), "txt": "\n".join(dataset.text[i] for i in dataset.img2txt[index])}
               for index, path in enumerate(dataset.image))
    return write_split(samples, folder, "retrieval")


def write_zeroshot(root: str | Path, folder: Path) -> int:
    """A zero-shot class-folder set (clip.py's `--zs_datafolder`) as a classification wds set, with its class
    names and prompts."""
    classnames, templates = load_zeroshot_classes(root)
    dataset = ZeroShotDataset(root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{name}\n" for name in classnames), encoding="utf-8")
    # ours fill a prompt with template.format(name), CLIP_benchmark with template.format(c=name)
    (folder / "zeroshot_classification_templates.txt").write_text(
        "".join(template.replace("{}", "{c}") + "\n" for template in templates), encoding="utf-8")
    samples = ({"png": load_rgb(path), "cls": label} for path, label in dataset.samples)
    return write_split(samples, folder, "classification")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: write the sets given; a one-line error for missing or malformed data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="root of the wds sets (OUT/retrieval, OUT/zeroshot)")
    parser.add_argument("--coco_file", help="COCO-style retrieval JSON (clip.py's --val_coco_file)")
    parser.add_argument("--coco_image_root", help="its images (clip.py's --coco_image_root)")
    parser.add_argument("--zeroshot_folder", help="zero-shot class folders (clip.py's --zs_datafolder)")
    parser.add_argument("--max_words", type=COUNT, default=30, help="captions are cut to this many words, as clip.py")
    args = parser.parse_args(argv)
    if bool(args.coco_file) != bool(args.coco_image_root):
        parser.error("--coco_file and --coco_image_root go together")
    if not args.coco_file and not args.zeroshot_folder:
        parser.error("nothing to write: give --coco_file/--coco_image_root and/or --zeroshot_folder")
    out = Path(args.out)
    try:
        if args.coco_file:
            count = write_retrieval(args.coco_file, args.coco_image_root, out / "retrieval", args.max_words)
            print(f"wrote {count} retrieval images to {out / 'retrieval'}")
        if args.zeroshot_folder:
            count = write_zeroshot(args.zeroshot_folder, out / "zeroshot")
            print(f"wrote {count} zero-shot images to {out / 'zeroshot'}")
    except (DataError, OSError) as error:
        print(f"clip_benchmark_data.py: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
