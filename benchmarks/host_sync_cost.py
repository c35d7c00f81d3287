"""What the step loop's per-step host syncs cost: the non-finite agreement (`engine.runtime.finite_on_every_rank`,
one device-to-host read of the loss) and the pair-id check (`models.gcl.state.check_ids`, one read of "any id
out of range?").

Usage (from the repository root):
    python benchmarks/host_sync_cost.py --steps-per-epoch 25 --epochs 4 --rounds 2 --out output/host_sync_cost.json
On a GPU: add `--device cuda` (and more steps: `--steps-per-epoch 100`). `--batch` and `--clip-flags` (e.g.
tiny towers) make steps shorter, so that a fixed per-step cost shows more.

clip.py trains in this process on the shapes demo data (built under `--work-dir`, or `--demo-dir`) with the demo's
towers and settings (configs/demo_shapes.yaml, `--ita_type isogclr_new`), once per variant and round, the variants
alternating: `with` (as shipped) and `without` (both checks replaced by no-ops: every loss counts as finite, the
ids as valid). ms/step is the batch over `train_samples_per_s` of log.txt (the step loop's time, data waits
included), over every epoch but each run's first. Each check alone is timed too (µs per call, median).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bimodal_exps"))
import clip  # noqa: E402
import engine.train  # noqa: E402
import models.gcl.base  # noqa: E402
from dataset.demo.build import main as build_demo  # noqa: E402
from engine.runtime import finite_on_every_rank  # noqa: E402
from models.gcl.state import check_ids  # noqa: E402

VARIANTS = ("with", "without")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-per-epoch", type=int, default=25, help="training pairs = this × --batch")
    parser.add_argument("--batch", type=int, default=64, help="--batch_size_train (the demo's: 64)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is discarded)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per variant, alternating")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--demo-dir", type=Path, default=None, help="shapes demo data (default: built)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "output" / "host_sync_cost")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: <work-dir>/host_sync_cost.json)")
    parser.add_argument("--clip-flags", default="", help="more clip.py flags, e.g. '--image_encoder test_vit'")
    return parser.parse_args(argv)


@contextmanager
def without_syncs() -> Iterator[None]:
    """Replace both checks by no-ops for the duration (what the loop would cost without them)."""
    finite, ids = engine.train.finite_on_every_rank, models.gcl.base.check_ids
    engine.train.finite_on_every_rank = lambda loss: True
    models.gcl.base.check_ids = lambda batch_ids, num_samples: batch_ids.long()
    try:
        yield
    finally:
        engine.train.finite_on_every_rank, models.gcl.base.check_ids = finite, ids


def demo_data(args: argparse.Namespace) -> Path:
    """The shapes demo data at the demo's 64 px, sized to `--steps-per-epoch` batches."""
    if args.demo_dir is not None:
        return args.demo_dir
    pairs = args.steps_per_epoch * args.batch
    root = args.work_dir / f"shapes_{pairs}"
    if not (root / "SOURCE").is_file():
        code = build_demo(["--source", "shapes", "--out", str(root), "--num_train", str(pairs),
                           "--num_val", "64", "--num_zeroshot_per_class", "1", "--image_size", "64"])
        if code != 0:
            raise SystemExit(f"building the shapes demo data in {root} failed")
    return root


def ms_per_step(args: argparse.Namespace, data: Path, out_dir: Path) -> list[float]:
    """Train one run; ms/step of each epoch after the first."""
    argv = ["--config", str(REPO / "configs" / "demo_shapes.yaml"), "--data_path", f"{data}/datasets",
            "--ann_path", f"{data}/clip_train", "--output_dir", str(out_dir), "--ita_type", "isogclr_new",
            "--epochs", str(args.epochs), "--batch_size_train", str(args.batch), "--eval_freq", "0",
            "--zs_dataset", "none", "--no-progress", "--device", args.device, *args.clip_flags.split()]
    if clip.main(argv) != 0:
        raise SystemExit(f"clip.py failed: {' '.join(argv)}")
    records = [json.loads(line) for line in (out_dir / "log.txt").read_text(encoding="utf-8").splitlines()]
    return [1000.0 * args.batch / record["train_samples_per_s"] for record in records[1:]]


def us_per_call(call: Callable[[], object], device: torch.device, repeats: int = 2000) -> float:
    """Median µs of one call (after the previous one has finished on the device)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def markdown(results: dict, batch: int) -> str:
    rows = ["| variant | ms/step (median over epochs) | min | max | epochs |", "|---|---:|---:|---:|---:|"]
    for variant in VARIANTS:
        values = results["ms_per_step"][variant]
        rows.append(f"| {variant} syncs | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} "
                    f"| {len(values)} |")
    calls = results["us_per_call"]
    rows += ["", f"finite_on_every_rank: {calls['finite_on_every_rank']:.1f} µs/call; "
                 f"check_ids ({batch} ids): {calls['check_ids']:.1f} µs/call ({results['device']})"]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = demo_data(args)
    device = torch.device(args.device)
    timings: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            out_dir = args.work_dir / f"run_{variant}_{round_index}"
            if variant == "with":
                timings[variant] += ms_per_step(args, data, out_dir)
            else:
                with without_syncs():
                    timings[variant] += ms_per_step(args, data, out_dir)
    loss, ids = torch.ones((), device=device), torch.arange(args.batch, device=device)
    results = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
               "steps_per_epoch": args.steps_per_epoch,
               "epochs": args.epochs, "rounds": args.rounds, "ms_per_step": timings,
               "us_per_call": {"finite_on_every_rank": us_per_call(lambda: finite_on_every_rank(loss), device),
                               "check_ids": us_per_call(lambda: check_ids(ids, 4 * args.batch), device)}}
    out = args.out or args.work_dir / "host_sync_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results, args.batch)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table, end="")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
