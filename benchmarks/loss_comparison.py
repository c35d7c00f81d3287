"""Train every loss on the fashion demo at several batch sizes and seeds; write a results page with plots.

Usage (from the repository root):
    python benchmarks/loss_comparison.py                     # full grid: 12 losses x B in {32, 128} x seeds 0-2
                                                             # (72 runs of 6 epochs: hours on a CPU)
    python benchmarks/loss_comparison.py --epochs 4 --jobs 2 --readme README.md -- --image_res 32
                                                             # the published grid (85 min on 2 cores)
    python benchmarks/loss_comparison.py --ita-types clip sogclr isogclr --epochs 2 --train-frac 0.25 \\
        --seeds 0 1 --jobs 2 --readme README.md               # a reduced grid; also refresh README's section
    python benchmarks/loss_comparison.py ... -- --image_encoder test_vit   # flags after `--` go to every run

Each run is `bimodal_exps/clip.py --config configs/demo_fashion.yaml` (the towers and optimiser of the
demo) with `--eval_freq 1`, in `<out-dir>/<ita_type>/bs<B>/seed<S>/`. The grid is incremental: a run whose
log already has the last epoch's evaluation is skipped, an interrupted run resumes from its
`checkpoint_last.pth`, and a run directory made with other settings stops the script (use another
`--out-dir`). Checkpoints of finished runs are deleted unless `--keep-checkpoints`. The learning-rate
warm-up is a fraction of each run's steps (`--warmup-frac`), so that batch sizes with fewer steps leave
warm-up too. The report (`--results-md`, `--plots-dir`, JSON beside the runs) is rebuilt from every
finished run of the requested grid, also when some runs fail.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from comparison_report import RunResult, load_run, write_report
from loss_cost import LOSSES
from models.losses import ITA_TYPES  # noqa: E402  (loss_cost puts bimodal_exps on the path)

REPO = Path(__file__).resolve().parents[1]
# every distinct contrastive loss, and SigLIP's sigmoid loss as the modern small-batch baseline
GRID_LOSSES = (*LOSSES, "siglip")
CLIP_PY = REPO / "bimodal_exps" / "clip.py"
BUILD_DEMO = REPO / "bimodal_exps" / "build_demo_data.py"


@dataclass(frozen=True)
class Settings:
    """What every run of the grid shares."""

    demo_dir: Path
    config: Path
    epochs: int
    train_frac: float
    warmup_frac: float
    extra: tuple[str, ...]


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid."""

    ita_type: str
    batch: int
    seed: int

    def directory(self, out_dir: Path) -> Path:
        return out_dir / self.ita_type / f"bs{self.batch}" / f"seed{self.seed}"


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this script's arguments, the clip.py flags after a `--`)."""
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, extra = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ita-types", nargs="+", default=list(GRID_LOSSES), choices=ITA_TYPES, metavar="ITA_TYPE",
                        help="losses to train (default: every distinct contrastive loss and siglip; the aliases "
                             "isogclr_new, sogclr_dro and infosogclr are the same code as isogclr and sogclr_mine)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every run (the demo config's 6)")
    parser.add_argument("--train-frac", type=float, default=1.0, help="prefix fraction of the 6000 training pairs")
    parser.add_argument("--warmup-frac", type=float, default=0.1, help="lr warm-up as a fraction of a run's steps")
    parser.add_argument("--out-dir", type=Path, default=REPO / "output" / "loss_comparison", help="run directories")
    parser.add_argument("--demo-dir", type=Path, default=REPO / "demo_data",
                        help="demo data root; built with --source fashion when missing")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo_fashion.yaml")
    parser.add_argument("--results-md", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument("--plots-dir", type=Path, default=REPO / "docs" / "plots")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also rewrite this README's loss-comparison section (between its markers)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per run (OMP/MKL; 1 avoids oversubscription on small shared machines)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoints of finished runs")
    args = parser.parse_args(own)
    args.extra = tuple(extra)
    for name in ("out_dir", "demo_dir", "config"):
        setattr(args, name, getattr(args, name).resolve())
    return args


def ensure_demo(demo_dir: Path) -> str:
    """Build the fashion demo data at `demo_dir` unless it exists; return its source (fashion or shapes)."""
    marker = demo_dir / "SOURCE"
    if not marker.is_file():
        subprocess.run([sys.executable, str(BUILD_DEMO), "--source", "fashion", "--out", str(demo_dir)], check=True)
    return marker.read_text(encoding="utf-8").strip()


def demo_counts(demo_dir: Path) -> dict[str, int]:
    """Sizes of the demo data (training pairs, retrieval images/captions, zero-shot classes), from its manifest."""
    manifest = json.loads((demo_dir / "datasets" / "demo_manifest.json").read_text(encoding="utf-8"))
    return {key: int(value) for key, value in manifest["counts"].items()}


def train_pairs(demo_dir: Path) -> int:
    return demo_counts(demo_dir)["train_pairs"]


def warmup_steps(settings: Settings, batch: int) -> int:
    """`warmup_frac` of the run's optimiser steps (clip.py drops the last partial batch)."""
    steps_per_epoch = math.floor(train_pairs(settings.demo_dir) * settings.train_frac) // batch
    return max(1, round(settings.warmup_frac * steps_per_epoch * settings.epochs))


def clip_command(spec: RunSpec, settings: Settings, run_dir: Path) -> list[str]:
    """The clip.py command line of one run (without `--resume`)."""
    demo = settings.demo_dir
    return [sys.executable, str(CLIP_PY), "--config", str(settings.config),
            "--data_path", str(demo / "datasets"), "--ann_path", str(demo / "clip_train"),
            "--output_dir", str(run_dir), "--ita_type", spec.ita_type, "--batch_size_train", str(spec.batch),
            "--seed", str(spec.seed), "--epochs", str(settings.epochs), "--train_frac", str(settings.train_frac),
            "--warmup_steps", str(warmup_steps(settings, spec.batch)), "--eval_freq", "1",
            "--save_freq", str(settings.epochs), "--keep_checkpoints", "1", "--no-progress", *settings.extra]


def check_same_settings(run_dir: Path, command: list[str]) -> None:
    """Refuse to mix runs of different settings in one directory (`run.json` holds the command)."""
    record = run_dir / "run.json"
    if record.is_file():
        previous = json.loads(record.read_text(encoding="utf-8"))["command"]
        if previous[1:] != command[1:]:
            raise SystemExit(f"{run_dir} holds a run with other settings:\n  {' '.join(previous[1:])}\n"
                             f"use another --out-dir or delete that directory")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"command": command}, indent=1) + "\n", encoding="utf-8")


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def execute(spec: RunSpec, settings: Settings, out_dir: Path, threads: int) -> tuple[RunSpec, int]:
    """Run (or resume) one cell unless it is finished; return its exit status (0 when skipped)."""
    run_dir = spec.directory(out_dir)
    command = clip_command(spec, settings, run_dir)
    if load_run(run_dir, settings.epochs) is not None:
        return spec, 0
    resume = ["--resume"] if (run_dir / "checkpoint_last.pth").is_file() else []
    print(f"{'resuming' if resume else 'training'} {spec.ita_type} B={spec.batch} seed={spec.seed}", flush=True)
    with open(run_dir / "stdout.txt", "a", encoding="utf-8") as log:
        status = subprocess.run(command + resume, stdout=log, stderr=subprocess.STDOUT, env=thread_env(threads),
                                cwd=REPO).returncode
    print(f"  {spec.ita_type} B={spec.batch} seed={spec.seed}: "
          f"{'done' if status == 0 else f'FAILED (exit {status}, see {run_dir}/stdout.txt)'}", flush=True)
    return spec, status


def remove_checkpoints(run_dir: Path) -> None:
    for checkpoint in run_dir.glob("checkpoint_*.pth"):
        checkpoint.unlink()


def run_grid(specs: list[RunSpec], settings: Settings, args: argparse.Namespace) -> list[RunSpec]:
    """Run every cell (`--jobs` at a time); return the failed ones."""
    for spec in specs:
        run_dir = spec.directory(args.out_dir)
        check_same_settings(run_dir, clip_command(spec, settings, run_dir))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(lambda spec: execute(spec, settings, args.out_dir, args.threads), specs))
    if not args.keep_checkpoints:
        for spec, status in outcomes:
            if status == 0:
                remove_checkpoints(spec.directory(args.out_dir))
    return [spec for spec, status in outcomes if status != 0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    source = ensure_demo(args.demo_dir)
    settings = Settings(args.demo_dir, args.config, args.epochs, args.train_frac, args.warmup_frac, args.extra)
    # Seed-major order: a grid cut short still has every loss and batch size for its first seeds.
    specs = [RunSpec(t, b, s) for s in args.seeds for t in args.ita_types for b in args.batch_sizes]
    failed = run_grid(specs, settings, args)
    results: list[RunResult] = []
    for spec in specs:
        run = load_run(spec.directory(args.out_dir), args.epochs)
        if run is not None:
            results.append(run)
    grid = {"ita_types": args.ita_types, "batch_sizes": args.batch_sizes, "seeds": args.seeds,
            "epochs": args.epochs, "train_frac": args.train_frac, "warmup_frac": args.warmup_frac,
            "demo_source": source, "demo_counts": demo_counts(args.demo_dir), "config": str(args.config),
            "extra_flags": list(args.extra), "threads": args.threads}
    write_report(results, grid, args.out_dir / "loss_comparison.json", args.results_md, args.plots_dir,
                 args.readme)
    print(f"{len(results)}/{len(specs)} runs finished; wrote {args.results_md} and {args.plots_dir}/")
    for spec in failed:
        print(f"failed: {spec.ita_type} B={spec.batch} seed={spec.seed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
