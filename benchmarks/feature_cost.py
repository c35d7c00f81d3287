"""Time cost of `--accum_freq`, `--grad_checkpointing`, `--loss_tile` and bf16 autocast against plain training,
at the same effective batch.

Usage (from the repository root):
    python benchmarks/feature_cost.py --image-res 64 --batch 16 --steps 2 --out output/feature_cost.json \\
        --plot docs/plots/feature_cost.png
On a GPU: `--device cuda --image-res 224 --batch 256 --steps 10` (the bf16 row is then clip.py's `--use_amp
--amp_dtype bf16`).

Towers and loss as in `batch_memory.py` (timm ResNet-50, a DistilBERT-sized BERT encoder, random init,
`--ita_type sogclr`, AdamW). Each row is one `step_runner.py` process: clip.py's model and step loop on
synthetic batches, one warm-up step, then `--steps` timed steps (the loop's own samples/s). Accumulation rows
keep the effective batch: micro-batches of batch/K. The relative cost is plain's samples/s over the row's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from batch_memory import add_tower_options, tower_flags  # noqa: E402


def variants(batch: int, tile: int) -> list[tuple[str, list[str], str]]:
    """(name, clip.py flags, autocast dtype) of each row; the effective batch is `batch` in all."""
    rows = [("plain", ["--batch_size_train", str(batch)], "none")]
    for k in (2, 4):
        if batch % k == 0:
            rows.append((f"accum_freq {k}", ["--batch_size_train", str(batch // k), "--accum_freq", str(k)], "none"))
    rows += [("grad_checkpointing", ["--batch_size_train", str(batch), "--grad_checkpointing"], "none"),
             (f"loss_tile {tile}", ["--batch_size_train", str(batch), "--loss_tile", str(tile)], "none"),
             ("bf16 autocast", ["--batch_size_train", str(batch)], "bf16")]
    return rows


def measure(args: argparse.Namespace, flags: list[str], amp: str) -> dict:
    """One step_runner process; its JSON line."""
    command = [sys.executable, str(REPO / "benchmarks" / "step_runner.py"), "--steps", str(args.steps),
               "--amp", amp, "--device", args.device, *(["--threads", str(args.threads)] if args.threads else []),
               "--", *tower_flags(args), *flags]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict]) -> str:
    """Feature, samples/s, time relative to plain, peak memory."""
    lines = ["| feature | samples/s | time × plain | peak MiB |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['feature']} | {row['samples_per_s']:.2f} | {row['time_x_plain']:.2f} | "
                     f"{row['peak']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Horizontal bars of time × plain."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(rows) + 1.2))
    names = [row["feature"] for row in rows][::-1]
    values = [row["time_x_plain"] for row in rows][::-1]
    ax.barh(names, values, color="tab:blue")
    ax.axvline(1.0, color="black", linewidth=0.8)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center")
    ax.set_xlabel("time per sample relative to plain training")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(values) * 1.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="effective batch of every row")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--tile", type=int, default=4, help="--loss_tile of its row")
    add_tower_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="write rows as JSON (and the table as .md)")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG bar chart here")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, flags, amp in variants(args.batch, args.tile):
        rows.append({"feature": name, **measure(args, flags, amp)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for row in rows:
        row["time_x_plain"] = rows[0]["samples_per_s"] / row["samples_per_s"]
    table = markdown(rows)
    print(table)
    settings = (f"{args.image_encoder} {args.image_res} px + DistilBERT-sized text, {args.ita_type}, "
                f"batch {args.batch}, {args.steps} steps, {args.device}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1), encoding="utf-8")
        args.out.with_suffix(".md").write_text(f"Feature cost ({settings}).\n\n{table}\n", encoding="utf-8")
    if args.plot:
        plot(rows, args.plot, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
