"""The largest effective batch whose training step fits a memory budget, with and without `--accum_freq`,
`--grad_checkpointing` and `--loss_tile`.

Usage (from the repository root):
    python benchmarks/batch_memory.py --budget-mib 3072 --image-res 64 --max-batch 128 --out output/batch_memory.json
On a GPU (the budget then bounds `torch.cuda.max_memory_allocated`):
    python benchmarks/batch_memory.py --device cuda --budget-mib 40960 --image-res 224 --max-batch 65536 --micro 256

Towers: timm ResNet-50 and a BERT encoder of DistilBERT's sizes (6 layers, width 768; `openclip_setup.py`
writes it once under `--work-dir`), random init, embedding 256, `--ita_type sogclr`, AdamW. Every probe is one
`step_runner.py` process (clip.py's own model, loss and step loop on synthetic batches, two steps so that the
optimiser's state is held as in training); its peak memory is the process's peak resident set on the CPU
(weights, optimiser state and the batches included, as a GPU's memory would hold them). Without accumulation
the micro-batch doubles from `--start` until a step no longer fits, then bisects to within an eighth; with
accumulation the micro-batch stays at `--micro` (default: the largest batch found with the same other flags,
else plain's) and K = `--accum_freq` doubles and bisects the same way. `--max-batch` caps the effective batch
(the probes' time grows with it): a row at the cap reads "≥".
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from openclip_setup import text_model_dir, write_text_model  # noqa: E402


@dataclass(frozen=True)
class Feature:
    """One configuration: its name, clip.py flags, and whether the search grows K (accumulation) or the batch."""

    name: str
    flags: tuple[str, ...]
    accumulate: bool = False


def features(tile: int) -> list[Feature]:
    """Plain and each feature alone and combined (tile = the `--loss_tile` block)."""
    ckpt, tiled = ("--grad_checkpointing",), ("--loss_tile", str(tile))
    return [Feature("plain", ()), Feature("grad_checkpointing", ckpt), Feature("loss_tile", tiled),
            Feature("grad_checkpointing + loss_tile", (*ckpt, *tiled)), Feature("accum_freq", (), True),
            Feature("accum_freq + loss_tile", tiled, True),
            Feature("accum_freq + grad_checkpointing + loss_tile", (*ckpt, *tiled), True)]


def add_tower_options(parser: argparse.ArgumentParser) -> None:
    """Options of the tower pair and loss, shared with `feature_cost.py`."""
    parser.add_argument("--image-encoder", default="resnet50")
    parser.add_argument("--image-res", type=int, default=224)
    parser.add_argument("--text-encoder", default=None,
                        help="clip.py --text_encoder (default: a DistilBERT-sized BERT, written under --work-dir)")
    parser.add_argument("--ita-type", default="sogclr")
    parser.add_argument("--clip-flags", default="", help="more clip.py flags, e.g. '--embed_dim 64'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work-dir", type=Path, default=REPO / "output" / "batch_memory")


def tower_flags(args: argparse.Namespace) -> list[str]:
    """clip.py flags of the tower pair and loss (writes the DistilBERT-sized text tower on first use)."""
    text = args.text_encoder
    if text is None:
        text = str(text_model_dir(args.work_dir / "openclip_model"))
        if not (Path(text) / "config.json").is_file():
            write_text_model(args.work_dir / "openclip_model")
    return ["--image_encoder", args.image_encoder, "--image_res", str(args.image_res), "--text_encoder", text,
            "--embed_dim", "256", "--ita_type", args.ita_type, "--workers", "0", *shlex.split(args.clip_flags)]


def probe(args: argparse.Namespace, flags: list[str], batch: int, accum: int) -> dict:
    """One step_runner process at micro-batch `batch` × `accum`; its JSON line plus `mib` (the measured peak)."""
    # two steps: the optimiser's state exists from the first one on, as in training
    command = [sys.executable, str(REPO / "benchmarks" / "step_runner.py"), "--steps", "1", "--device", args.device,
               *(["--threads", str(args.threads)] if args.threads else []), "--", *flags,
               "--batch_size_train", str(batch), "--accum_freq", str(accum)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # out of memory on a GPU, or killed: does not fit
        print(f"  {batch} × {accum}: failed ({done.stderr.strip().splitlines()[-1:]})", file=sys.stderr, flush=True)
        return {"mib": float("inf")}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["mib"] = result["cuda_peak"] if args.device.startswith("cuda") else result["peak"]
    print(f"  {batch} × {accum}: {result['mib']:.0f} MiB", file=sys.stderr, flush=True)
    return result


def largest(fits, start: int, cap: int) -> tuple[int, dict | None, int]:
    """(largest n <= cap with fits(n) not None, its result, probes run): doubling from `start`, then bisection
    until the gap is at most an eighth of the fitting value."""
    lo, lo_result, probes, n = 0, None, 0, start
    while True:
        result = fits(min(n, cap))
        probes += 1
        if result is None:
            hi = min(n, cap)
            break
        lo, lo_result = min(n, cap), result
        if lo >= cap:
            return lo, lo_result, probes
        n *= 2
    while hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        result = fits(mid)
        probes += 1
        if result is None:
            hi = mid
        else:
            lo, lo_result = mid, result
    return lo, lo_result, probes


def search(args: argparse.Namespace) -> Iterator[dict]:
    """One row per feature, as each is found: the largest effective batch under the budget, its peak memory."""
    base = tower_flags(args)
    best = {}  # largest batch found without accumulation, by the other flags
    for feature in features(args.tile):
        if feature.name not in args.features:
            continue
        print(feature.name, file=sys.stderr, flush=True)
        flags = [*base, *feature.flags]

        def fits(n: int, micro: int = 0) -> dict | None:
            result = probe(args, flags, micro or n, n if micro else 1)
            return result if result["mib"] <= args.budget_mib else None

        if feature.accumulate:
            micro = args.micro or best.get(feature.flags) or best.get(()) or 1
            cap = max(2, args.max_batch // micro)
            k, result, probes = largest(lambda n: fits(n, micro), 2, cap)
            batch, accum, at_cap = micro, k, k >= cap
        else:
            batch, result, probes = largest(fits, args.start, args.max_batch)
            accum, at_cap = 1, batch >= args.max_batch
            best[feature.flags] = batch
        effective = batch * accum if result else 0
        yield {"feature": feature.name, "micro_batch": batch if result else 0, "accum_freq": accum,
               "effective_batch": effective, "at_cap": at_cap,
               "peak_mib": result["mib"] if result else None, "probes": probes}


def markdown(rows: list[dict], budget: float) -> str:
    """Feature, largest effective batch (micro × K) and its peak memory."""
    lines = [f"| feature | largest effective batch under {budget:.0f} MiB | micro-batch × K | peak MiB | probes |",
             "|---|---:|---|---:|---:|"]
    for row in rows:
        batch = f"≥ {row['effective_batch']}" if row["at_cap"] else str(row["effective_batch"])
        peak = f"{row['peak_mib']:.0f}" if row["peak_mib"] is not None else "—"
        lines.append(f"| {row['feature']} | {batch} | {row['micro_batch']} × {row['accum_freq']} | {peak} | "
                     f"{row['probes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-mib", type=float, default=3072, help="peak memory allowed per step")
    add_tower_options(parser)
    parser.add_argument("--tile", type=int, default=64, help="--loss_tile of the tiled rows")
    parser.add_argument("--start", type=int, default=4, help="first micro-batch tried")
    parser.add_argument("--micro", type=int, default=0, help="micro-batch of the accumulation rows (0: plain's)")
    parser.add_argument("--max-batch", type=int, default=128, help="cap on the effective batch")
    parser.add_argument("--features", nargs="+", default=[f.name for f in features(0)],
                        help="which rows (names as in the table)")
    parser.add_argument("--out", type=Path, default=None, help="write rows as JSON (and the table as .md)")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    meta = {k: str(v) for k, v in vars(args).items() if k not in ("out", "work_dir")}
    rows = []
    for row in search(args):  # written after every row: a long run that is stopped keeps what it found
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
            settings = ", ".join(f"{k} {v}" for k, v in meta.items())
            args.out.with_suffix(".md").write_text(f"Largest effective batch ({settings}).\n\n"
                                                   f"{markdown(rows, args.budget_mib)}\n", encoding="utf-8")
    print(markdown(rows, args.budget_mib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
