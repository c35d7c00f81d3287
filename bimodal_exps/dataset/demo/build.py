"""Command line of `bimodal_exps/build_demo_data.py`: choose a source, skip or (re)build, report."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dataset.demo import fashion, folders
from dataset.demo.shapes import ShapesSource
from dataset.demo.shards import SHARD_NAME_WIDTH
from dataset.demo.writer import DEFAULT_SHARD_SIZE, DemoSource, Layout, remove_outputs, write_demo
from dataset.errors import DataError

MANIFEST_VERSION = 1
SIZE_FLAGS = ("num_train", "num_val", "num_zeroshot_per_class", "image_size", "num_linear_per_class")
DEFAULT_SIZES = {
    "shapes": {"num_train": 6000, "num_val": 500, "num_zeroshot_per_class": 20, "image_size": 64,
               "num_linear_per_class": 6},
    "fashion": {"num_train": 6000, "num_val": 500, "num_zeroshot_per_class": 50, "image_size": 64,
                "num_linear_per_class": 50},
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_demo_data.py",
        description="Build a small demo dataset in the README commands' layout (clip_train/ + datasets/) under --out.")
    parser.add_argument("--source", choices=("auto", "shapes", "fashion"), default="auto",
                        help="auto = fashion when the Fashion-MNIST files are (or can be) installed, else shapes")
    parser.add_argument("--out", type=Path, default=Path("demo_data"), help="output root (default: demo_data)")
    parser.add_argument("--seed", type=int, default=0, help="the output is a function of the seed and sizes")
    for flag in SIZE_FLAGS:
        parser.add_argument(f"--{flag}", type=_positive_int, default=None,
                            help="default: " + ", ".join(f"{src} {sizes[flag]}"
                                                     for src, sizes in DEFAULT_SIZES.items()))
    parser.add_argument("--format", choices=("json", "webdataset"), default="json",
                        help="webdataset: also write the training pairs as img2dataset shards under "
                             "datasets/cc3m_wds/ (same images; keys with gaps as after failed downloads)")
    parser.add_argument("--shard_size", type=_positive_int, default=DEFAULT_SHARD_SIZE,
                        help="rows of the source list per shard with --format webdataset")
    parser.add_argument("--force", action="store_true",
                        help="replace existing files at the output paths that the demo builder did not write")
    return parser.parse_args(argv)


def _try_install_fashion() -> bool:
    """As root with apt-get available, try installing the Debian package; report success."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    print(f"Fashion-MNIST files missing; trying `apt-get install -y {fashion.DEBIAN_PACKAGE}`", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(["apt-get", "install", "-y", "-q", fashion.DEBIAN_PACKAGE],
                            capture_output=True, env=env, check=False)
    return result.returncode == 0


def resolve_source(requested: str) -> str:
    """The concrete source for `requested` (auto: fashion when possible, else shapes)."""
    if requested != "auto":
        return requested
    if fashion.available() or (_try_install_fashion() and fashion.available()):
        return "fashion"
    print(f"fashion source unavailable (Debian package {fashion.DEBIAN_PACKAGE} not installed); using shapes")
    return "shapes"


def make_source(name: str, seed: int, image_size: int) -> DemoSource:
    if name == "fashion":
        return fashion.FashionSource(seed, image_size)
    return ShapesSource(seed, image_size)


def _read_manifest(layout: Layout) -> dict[str, Any] | None:
    """The previous build's manifest, {} if it is unreadable, None if there is none."""
    try:
        manifest = json.loads(layout.manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _write_manifest(layout: Layout, settings: dict[str, Any], counts: dict[str, int] | None) -> None:
    layout.manifest.parent.mkdir(parents=True, exist_ok=True)
    layout.manifest.write_text(json.dumps({"settings": settings, "counts": counts}, indent=2) + "\n",
                               encoding="utf-8")


def build(layout: Layout, settings: dict[str, Any], force: bool = False) -> tuple[dict[str, int], bool]:
    """Build unless an identical complete build exists; return (counts, skipped).

    Refuses to replace files that no demo manifest accounts for (real data) unless `force`. The
    manifest is written before the files (counts null) and completed after them, so an
    interrupted build is still recognised as the builder's own and redone on the next run.
    """
    manifest = _read_manifest(layout)
    if (manifest is not None and manifest.get("settings") == settings and manifest.get("counts")
            and all(path.exists() for path in layout.outputs())):
        counts, skipped = manifest["counts"], True
    else:
        existing = [path for path in layout.outputs() if path.exists()]
        if existing and manifest is None and not force:
            raise DataError(f"{existing[0]} exists and was not written by the demo builder; "
                            "choose another --out or pass --force to replace it")
        source = make_source(settings["source"], settings["seed"], settings["image_size"])
        remove_outputs(layout)
        _write_manifest(layout, settings, None)
        counts, skipped = write_demo(source, layout, settings["num_train"], settings["num_val"],
                                     settings["num_zeroshot_per_class"],
                                     settings.get("shard_size", DEFAULT_SHARD_SIZE)), False
        per_class = settings.get("num_linear_per_class", DEFAULT_SIZES[settings["source"]]["num_linear_per_class"])
        linear, _ = folders.build(layout.linear_root, folders.DemoSettings(
            settings["source"], settings["seed"], per_class, max(per_class // 2, 1), settings["image_size"]))
        counts.update({f"linear_{split}": number for split, number in linear.items()})
        _write_manifest(layout, settings, counts)
    layout.source_file.write_text(settings["source"] + "\n", encoding="utf-8")
    return counts, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        source = resolve_source(args.source)
        settings = {"version": MANIFEST_VERSION, "source": source, "seed": args.seed}
        settings.update({flag: getattr(args, flag) or DEFAULT_SIZES[source][flag] for flag in SIZE_FLAGS})
        if args.format == "webdataset":
            settings["shard_size"] = args.shard_size
        layout = Layout(args.out, webdataset=args.format == "webdataset")
        start = time.perf_counter()
        counts, skipped = build(layout, settings, args.force)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    action = "already built (same settings), nothing to do:" if skipped else \
        f"wrote in {time.perf_counter() - start:.1f}s:"
    print(f"{source} demo data at {args.out} {action} {counts['train_pairs']} training pairs, "
          f"{counts['retrieval_images']} retrieval images ({counts['retrieval_captions']} captions), "
          f"{counts['zeroshot_classes']} zero-shot classes / {counts['zeroshot_images']} images, "
          f"{counts['linear_train']} + {counts['linear_val']} linear-probe images in {layout.linear_root}; "
          f"use --data_path {args.out / 'datasets'} --ann_path {args.out / 'clip_train'}")
    if layout.webdataset:
        last = f"{counts['train_shards'] - 1:0{SHARD_NAME_WIDTH}d}"
        print(f"webdataset: {counts['train_shard_samples']} pairs in {counts['train_shards']} shards; train from "
              f"them with --dataset_type webdataset --train-data '{layout.train_shards}/{{{'0' * SHARD_NAME_WIDTH}.."
              f"{last}}}.tar' --train-num-samples {counts['train_shard_samples']} "
              f"--data_size {counts['train_data_size']}")
    return 0
