"""Training-loader throughput: webdataset shards against annotation JSON + image folder, same data.

Usage (from the repository root):
    python benchmarks/loader_throughput.py --workers 0 1 2 --out output/loader_throughput.json

One demo-builder run (`--format webdataset`, procedural shapes) writes the training pairs both as an
image folder with its JSON and as img2dataset shards (same JPEG bytes). Each loader then runs one
epoch per worker count, with what training pays for: JPEG decode, the training transform
(RandomResizedCrop + flip + RandomAugment + normalise) and BPE tokenisation of every batch in the
workers. Reported (median of `--repeats` fresh loaders): samples/s after the first batch (steady
state), the time to the first batch (start-up: worker start, shuffle buffer fill), and samples/s over
the whole epoch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bimodal_exps"))
from dataset.collate import TokenizingCollate  # noqa: E402
from dataset.demo.build import main as build_demo  # noqa: E402
from dataset.demo.writer import Layout  # noqa: E402
from dataset.image_text import ImageTextDataset  # noqa: E402
from dataset.sampler import ResumableDistributedSampler  # noqa: E402
from dataset.transforms import build_train_transform  # noqa: E402
from dataset.webdataset_loader import WebDatasetSpec, create_webdataset_loader  # noqa: E402
from models.tokenizer import BPETokenizer  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo_dir", type=Path, default=None, help="demo data root (default: a temporary folder)")
    parser.add_argument("--num_train", type=int, default=2048, help="training pairs")
    parser.add_argument("--image_size", type=int, default=64, help="stored image side")
    parser.add_argument("--image_res", type=int, default=64, help="training transform output side")
    parser.add_argument("--shard_size", type=int, default=256, help="rows per shard")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--context_length", type=int, default=77, help="BPE tokens per caption")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="epochs per setting (fresh loader each); median")
    parser.add_argument("--out", type=Path, default=Path("output/loader_throughput.json"), help="JSON results")
    return parser.parse_args()


def time_epoch(loader: Iterable, batch_size: int) -> dict[str, float]:
    """Iterate once; time to the first batch, steady-state and whole-epoch samples per second."""
    start = time.perf_counter()
    first = None
    batches = 0
    for _ in loader:
        batches += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    steady = (batches - 1) * batch_size / (end - first) if batches > 1 else float("nan")
    return {"batches": batches, "first_batch_s": first - start, "steady_samples_per_s": steady,
            "epoch_samples_per_s": batches * batch_size / (end - start)}


def json_loader(layout: Layout, args: argparse.Namespace, tokenizer: BPETokenizer, workers: int) -> DataLoader:
    """The JSON path as clip.py builds it in one process (its sampler keys each sample's augmentation seed)."""
    dataset = ImageTextDataset([layout.train_json], layout.train_images, build_train_transform(args.image_res))
    sampler = ResumableDistributedSampler(dataset, args.batch_size, num_replicas=1, rank=0, drop_last=True)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                      collate_fn=TokenizingCollate(tokenizer))


def webdataset_loader(pattern: str, num_samples: int, data_size: int, args: argparse.Namespace,
                      tokenizer: BPETokenizer, workers: int):
    spec = WebDatasetSpec(pattern, num_samples, args.batch_size, data_size, workers=workers)
    parts = create_webdataset_loader(spec, build_train_transform(args.image_res), tokenizer)
    parts.loader.set_epoch(0)
    return parts.loader


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    root = args.demo_dir or Path(tempfile.mkdtemp(prefix="loader_throughput_"))
    counts_path = root / "datasets" / "demo_manifest.json"
    status = build_demo(["--source", "shapes", "--out", str(root), "--num_train", str(args.num_train),
                         "--image_size", str(args.image_size), "--num_val", "8", "--num_zeroshot_per_class", "1",
                         "--format", "webdataset", "--shard_size", str(args.shard_size)])
    if status != 0:
        return status
    counts = json.loads(counts_path.read_text(encoding="utf-8"))["counts"]
    layout = Layout(root, webdataset=True)
    pattern = f"{layout.train_shards}/{{00000..{counts['train_shards'] - 1:05d}}}.tar"
    tokenizer = BPETokenizer(args.context_length)

    rows = []
    for workers in args.workers:
        for name, make in (("json + folder", lambda w: json_loader(layout, args, tokenizer, w)),
                           ("webdataset", lambda w: webdataset_loader(pattern, counts["train_shard_samples"],
                                                                      counts["train_data_size"], args, tokenizer, w))):
            runs = [time_epoch(make(workers), args.batch_size) for _ in range(args.repeats)]
            result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            rows.append({"loader": name, "workers": workers, **result})
            print(f"{name:14s} workers={workers}: {result['steady_samples_per_s']:.0f} samples/s", flush=True)

    print(f"\n{args.num_train} pairs of {args.image_size}px JPEGs, transform to {args.image_res}px, batch "
          f"{args.batch_size}, BPE context {args.context_length}, torch threads 1, median of {args.repeats}\n")
    print("| loader | workers | samples/s (steady) | samples/s (epoch) | first batch (s) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['loader']} | {row['workers']} | {row['steady_samples_per_s']:.0f} | "
              f"{row['epoch_samples_per_s']:.0f} | {row['first_batch_s']:.2f} |")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "results": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
