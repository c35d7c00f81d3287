"""Peak memory and time of the loss alone, tiled (`--loss_tile N`) against untiled, as the batch grows.

Usage (from the repository root):
    python benchmarks/loss_memory.py --batch-sizes 1024 4096 16384 --tile 256 --threads 1 --out loss_memory.json

One forward+backward of clip, sogclr, isogclr and siglip on l2-normalised [B, d] features (single process,
so B is the global batch); peak memory and median time are measured as in `loss_cost.py` (allocator peak
on CUDA, the profiler's per-op memory events on CPU). Untiled, the loss keeps B×B similarity and weight
matrices (O(B²)); tiled, blocks of N×N are formed and recomputed in the backward (O(N² + B·d)).
Inf-CL (PyPI `inf-cl`, the tiled InfoNCE of Inf-CLIP) needs CUDA kernels (Triton), so it has no CPU row;
on a GPU: `--device cuda --batch-sizes 4096 16384 65536 --tile 4096`. `--untiled-max 16384` leaves out the untiled
rows that cannot fit (B = 65,536 untiled needs about 100 GiB), so the tiled 64k row runs on a small machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bimodal_exps"))
from loss_cost import _median_ms, _peak_bytes  # noqa: E402
from models.losses import build_loss  # noqa: E402

LOSSES = ("clip", "sogclr", "isogclr", "siglip")


def measure(name: str, batch: int, dim: int, tile: int, repeats: int, device: torch.device) -> dict:
    """One row: median ms and peak MiB of forward+backward of `name` at batch `batch` (tile 0: untiled)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_()
    txt = F.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device).requires_grad_()
    ids = torch.arange(batch, device=device)
    loss_fn = build_loss(name, batch, loss_tile=tile).to(device)

    def step() -> None:
        loss_fn(img, txt, ids).loss.backward()

    ms = _median_ms(step, device, repeats)
    return {"loss": name, "batch": batch, "tile": tile, "ms": ms, "peak_mib": _peak_bytes(step, device) / 2 ** 20}


def markdown(rows: list[dict]) -> str:
    """Per loss and B: untiled and tiled peak MiB and ms."""
    by_key = {(r["loss"], r["batch"], r["tile"] > 0): r for r in rows}
    lines = ["| loss | B | untiled MiB | tiled MiB | untiled ms | tiled ms |", "|---|---|---|---|---|---|"]
    for name in LOSSES:
        for batch in sorted({r["batch"] for r in rows}):
            cells = [by_key.get((name, batch, t)) for t in (False, True)]
            if not any(cells):
                continue
            mem = [f"{c['peak_mib']:.1f}" if c else "—" for c in cells]
            ms = [f"{c['ms']:.0f}" if c else "—" for c in cells]
            lines.append(f"| {name} | {batch} | {mem[0]} | {mem[1]} | {ms[0]} | {ms[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tile", type=int, default=256, help="--loss_tile of the tiled rows")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--untiled-max", type=int, default=None,
                        help="skip untiled rows above this B (their B×B matrices need O(B²) memory: 100 GiB at 64k)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON (after every row) and .md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)  # before the first row, which may take an hour
    meta = {"device": str(device), "dim": args.dim, "tile": args.tile, "repeats": args.repeats,
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    rows = []
    for batch in args.batch_sizes:
        for name in args.losses:
            untiled = args.untiled_max is None or batch <= args.untiled_max
            for tile in (0, args.tile) if untiled else (args.tile,):
                rows.append(measure(name, batch, args.dim, tile, args.repeats, device))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if args.out:
                    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown(rows)
    print(table)
    if args.out:
        settings = ", ".join(f"{k} {v}" for k, v in meta.items())
        args.out.with_suffix(".md").write_text(f"Loss forward+backward ({settings}).\n\n{table}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
