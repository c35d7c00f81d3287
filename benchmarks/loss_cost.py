"""Forward+backward cost of every loss relative to `clip` (time and peak memory).

Usage (from the repository root):
    python benchmarks/loss_cost.py --batch-sizes 64 256 1024 4096 --repeats 5 --out loss_cost.json

Times are the median of `--repeats` forward+backward passes after one warm-up pass, on local
l2-normalised [B, d] features with requires_grad (single process, so B is the global batch).
Peak memory is the allocator-level peak during one pass: torch.cuda.max_memory_allocated on CUDA,
on CPU the running sum of the profiler's per-op memory events (an op-granular approximation).
The TempNet row includes its two temperature networks; their own cost is reported as a separate
"network only" row so the GCL part can be compared with the others.

The "matmul floor" row is what no loss can go below: the two B×B similarity products of [B, d]
features (image·textᵀ and text·imageᵀ) forward, and their backward with a dense upstream gradient
(four more B×B×d products). Each loss's cell shows its time as a multiple of clip's and of the floor.
On a GPU, larger batches: `--device cuda --batch-sizes 64 256 1024 4096 16384 32768`.
`--out-md` writes the table (default: beside `--out`, with a .md suffix).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bimodal_exps"))
from models.losses import build_loss  # noqa: E402

LOSSES = ("clip", "sogclr", "isogclr", "isogclr_tempnet", "sogclr_mine", "sogclr_v2_mine", "hybrid",
          "fastclip_v0", "fastclip_v1", "fastclip_v2", "fastclip_v3")
TEMPNET_NET = "isogclr_tempnet (network only)"
FLOOR = "matmul floor (2 B×B×d products fwd+bwd)"
ROWS = (FLOOR, *LOSSES, TEMPNET_NET)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def _median_ms(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    step()  # warm-up (also the first visit of every id)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _floor_step(img: torch.Tensor, txt: torch.Tensor) -> Callable[[], None]:
    """The similarity products alone: img·txtᵀ and txt·imgᵀ, backward with dense random gradients."""
    g = torch.Generator(device="cpu").manual_seed(1)
    grads = [torch.randn(img.shape[0], txt.shape[0], generator=g).to(img.device) for _ in range(2)]

    def step() -> None:
        torch.autograd.backward([img @ txt.T, txt @ img.T], grads)
    return step


def _make_step(name: str, batch: int, dim: int, device: torch.device) -> Callable[[], None]:
    g = torch.Generator(device="cpu").manual_seed(0)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_()
    txt = F.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_()
    ids = torch.arange(batch, device=device)
    if name == FLOOR:
        return _floor_step(img, txt)
    if name == TEMPNET_NET:
        loss_fn = build_loss("isogclr_tempnet", 2 * batch, embed_dim=dim).to(device)

        def step() -> None:
            taus = loss_fn.temp_gen_img(img) + loss_fn.temp_gen_txt(txt)
            taus.sum().backward()
        return step
    loss_fn = build_loss(name, 2 * batch, embed_dim=dim).to(device)

    def step() -> None:
        loss_fn(img, txt, ids).loss.backward()
    return step


def run(batch_sizes: list[int], dim: int, repeats: int, device: torch.device) -> list[dict]:
    rows = []
    for batch in batch_sizes:
        for name in ROWS:
            step = _make_step(name, batch, dim, device)
            ms = _median_ms(step, device, repeats)
            peak = _peak_bytes(step, device)
            rows.append({"loss": name, "batch": batch, "ms": ms, "peak_mib": peak / 2 ** 20})
            print(f"B={batch:5d} {name:32s} {ms:9.2f} ms {peak / 2 ** 20:9.1f} MiB", file=sys.stderr, flush=True)
    clip = {r["batch"]: r for r in rows if r["loss"] == "clip"}
    floor = {r["batch"]: r for r in rows if r["loss"] == FLOOR}
    for r in rows:
        r["time_x_clip"] = r["ms"] / clip[r["batch"]]["ms"]
        r["mem_x_clip"] = r["peak_mib"] / max(clip[r["batch"]]["peak_mib"], 1e-9)
        r["time_x_floor"] = r["ms"] / floor[r["batch"]]["ms"]
    return rows


def markdown(rows: list[dict], batch_sizes: list[int]) -> str:
    """Time (×clip, ×floor) and peak memory (×clip) per loss and batch size."""
    head = "| loss | " + " | ".join(f"B={b} ms (×clip, ×floor) | B={b} MiB (×clip)" for b in batch_sizes) + " |"
    lines = [head, "|---" * (1 + 2 * len(batch_sizes)) + "|"]
    by_key = {(r["loss"], r["batch"]): r for r in rows}
    for name in ROWS:
        cells = []
        for b in batch_sizes:
            r = by_key[(name, b)]
            cells += [f"{r['ms']:.1f} ({r['time_x_clip']:.2f}, {r['time_x_floor']:.1f})",
                      f"{r['peak_mib']:.1f} ({r['mem_x_clip']:.2f})"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--out-md", type=Path, default=None, help="write the table here (default: --out as .md)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for path in (args.out, args.out_md):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)  # before the measurements, not after
    rows = run(args.batch_sizes, args.dim, args.repeats, device)
    table = markdown(rows, args.batch_sizes)
    print(table)
    meta = {"device": str(device), "dim": args.dim, "repeats": args.repeats, "threads": torch.get_num_threads(),
            "torch": torch.__version__}
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out_md = args.out_md or (args.out.with_suffix(".md") if args.out else None)
    if out_md:
        settings = ", ".join(f"{k} {v}" for k, v in meta.items())
        out_md.write_text(f"Loss forward+backward, median of {args.repeats} ({settings}).\n\n{table}\n",
                          encoding="utf-8")


if __name__ == "__main__":
    main()
