"""Per-rank cost of the distributed loss recipe (docs/losses.md §11) against the full-matrix recipe of the references.

Usage (from the repository root; CPU, gloo, W processes on this machine):
    python benchmarks/distributed_loss.py --world 2 --batch-sizes 256 1024 --out output/distributed_loss.json

Two recipes, same loss module (`build_loss`), same global batch B = W·b, d-dimensional features:
* local rows (what the losses do): each rank computes its b anchor rows against the B candidates (b×B per
  direction) and all-gathers its anchors' new state, in both `dist_mode`s:
  - autograd: all-gather whose backward sums the B×d feature gradients over ranks (all-reduce on gloo);
  - fastclip: all-gather without grad plus FastCLIP's candidate part (B global anchors × b local
    candidates, from per-anchor scalars that ride in the state all-gather); no collective in the backward.
* full matrix (ALBEF-derived references; dist_mode n/a): all-gather whose backward keeps the own slice;
  every rank computes the whole B×B loss and updates the state of all B ids itself.
Reported per rank: median forward+backward time, bytes of tensors saved for backward (the loss's activation
memory), and bytes sent per step (and the part sent during the backward), counted by wrapping the
collectives (ring estimates: all_gather (W−1)·n, all_reduce 2(W−1)/W·n, reduce_scatter (W−1)/W·n for an
n-byte input).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bimodal_exps"))
from models.gcl import collectives  # noqa: E402
from models.losses import build_loss  # noqa: E402

CELLS = (("local rows", "autograd"), ("local rows", "fastclip"), ("full matrix", "n/a"))  # (recipe, dist_mode)


class _GatherOwnSlice(torch.autograd.Function):
    """The references' gather: forward all_gather, backward returns this rank's slice of its own gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


class CommCounter:
    """Wraps the collectives of torch.distributed and adds up ring-estimate bytes sent by this rank."""

    NAMES = ("all_gather", "all_reduce", "reduce_scatter_tensor")

    def __init__(self) -> None:
        self.bytes = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[CommCounter]:
        originals = {name: getattr(dist, name) for name in self.NAMES}
        world = dist.get_world_size()

        def all_gather(parts, tensor, *args, **kwargs):
            self.bytes += (world - 1) * tensor.numel() * tensor.element_size()
            return originals["all_gather"](parts, tensor, *args, **kwargs)

        def all_reduce(tensor, *args, **kwargs):
            self.bytes += 2 * (world - 1) * tensor.numel() * tensor.element_size() // world
            return originals["all_reduce"](tensor, *args, **kwargs)

        def reduce_scatter_tensor(output, tensor, *args, **kwargs):
            self.bytes += (world - 1) * tensor.numel() * tensor.element_size() // world
            return originals["reduce_scatter_tensor"](output, tensor, *args, **kwargs)

        for name, wrapper in (("all_gather", all_gather), ("all_reduce", all_reduce),
                              ("reduce_scatter_tensor", reduce_scatter_tensor)):
            setattr(dist, name, wrapper)
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(dist, name, original)


@contextlib.contextmanager
def single_process_view() -> Iterator[None]:
    """Make the loss see world size 1, so it treats the gathered batch as local (full B×B, local state writes)."""
    original = collectives.rank_and_world
    collectives.rank_and_world = lambda: (0, 1)
    try:
        yield
    finally:
        collectives.rank_and_world = original


def saved_bytes(step) -> int:
    """Bytes of the distinct tensors autograd saves for backward while `step()` runs its forward."""
    seen: dict[tuple[int, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(seen.values())


def _features(b: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=generator), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(b, d, generator=generator), dim=1).requires_grad_()
    return img, txt


def _forward(loss_fn, recipe: str, img: torch.Tensor, txt: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The loss of one step under `recipe` (forward only, including its collectives)."""
    if recipe == "local rows":
        return loss_fn(img, txt, ids).loss
    all_img, all_txt = _GatherOwnSlice.apply(img), _GatherOwnSlice.apply(txt)
    all_ids = collectives.all_gather_no_grad(ids)
    with single_process_view():
        return loss_fn(all_img, all_txt, all_ids).loss


def _step(loss_fn, recipe: str, img: torch.Tensor, txt: torch.Tensor, ids: torch.Tensor) -> None:
    _forward(loss_fn, recipe, img, txt, ids).backward()


def measure(rank: int, world: int, loss_name: str, recipe: str, dist_mode: str, global_batch: int, dim: int,
            repeats: int) -> dict[str, float]:
    """One (loss, recipe, dist_mode, B) cell on this rank."""
    b = global_batch // world
    mode = {} if dist_mode == "n/a" else {"dist_mode": dist_mode}
    loss_fn = build_loss(loss_name, num_samples=global_batch, **mode)
    img, txt = _features(b, dim, seed=1000 * rank + global_batch)
    ids = torch.arange(rank * b, (rank + 1) * b)
    _step(loss_fn, recipe, img, txt, ids)  # warm-up, first visit of every id
    counter, losses = CommCounter(), []
    with counter.counting():
        activation = saved_bytes(lambda: losses.append(_forward(loss_fn, recipe, img, txt, ids)))
        forward_bytes = counter.bytes
        losses.pop().backward()
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        _step(loss_fn, recipe, img, txt, ids)
        times.append(1000.0 * (time.perf_counter() - start))
    return {"ms": statistics.median(times), "saved_mb": activation / 2**20, "comm_kb": counter.bytes / 2**10,
            "comm_bwd_kb": (counter.bytes - forward_bytes) / 2**10}


def worker(rank: int, world: int, port: int, config: dict, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rows = [{"loss": loss, "recipe": recipe, "dist_mode": mode, "B": batch, "rank": rank,
                 **measure(rank, world, loss, recipe, mode, batch, config["dim"], config["repeats"])}
                for batch in config["batch_sizes"] for loss in config["losses"] for recipe, mode in CELLS]
        torch.save(rows, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarise(per_rank: list[list[dict]]) -> list[dict]:
    """One row per (B, loss, recipe, dist_mode): the slowest rank's time, the largest memory and traffic."""
    rows = []
    for cells in zip(*per_rank):
        first = cells[0]
        rows.append({"B": first["B"], "loss": first["loss"], "recipe": first["recipe"], "dist_mode": first["dist_mode"],
                     "ms_per_rank": max(c["ms"] for c in cells), "saved_mb_per_rank": max(c["saved_mb"] for c in cells),
                     "comm_kb_per_rank": max(c["comm_kb"] for c in cells),
                     "comm_bwd_kb_per_rank": max(c["comm_bwd_kb"] for c in cells)})
    return rows


def markdown(rows: list[dict], world: int, dim: int) -> str:
    lines = [f"W = {world} (gloo, CPU), d = {dim}; per rank, forward+backward of the loss",
             "", "| B | loss | recipe | dist_mode | time (ms) | saved for backward (MB) | sent per step (KB) "
                 "| of which in backward (KB) |",
             "|---:|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['B']} | {r['loss']} | {r['recipe']} | {r['dist_mode']} | {r['ms_per_rank']:.2f} | "
              f"{r['saved_mb_per_rank']:.2f} | {r['comm_kb_per_rank']:.0f} | {r['comm_bwd_kb_per_rank']:.0f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024], help="global batch sizes")
    parser.add_argument("--losses", nargs="+", default=["clip", "sogclr"])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("output/distributed_loss.json"))
    args = parser.parse_args(argv)
    if any(b % args.world for b in args.batch_sizes):
        parser.error(f"every batch size must be a multiple of --world {args.world}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {"dim": args.dim, "repeats": args.repeats, "batch_sizes": args.batch_sizes, "losses": args.losses}
    scratch = args.out.parent / f".{args.out.stem}_ranks"
    scratch.mkdir(exist_ok=True)
    mp.spawn(worker, args=(args.world, _free_port(), config, str(scratch)), nprocs=args.world, join=True)
    per_rank = [torch.load(scratch / f"rank{r}.pt", weights_only=True) for r in range(args.world)]
    for r in range(args.world):
        (scratch / f"rank{r}.pt").unlink()
    scratch.rmdir()
    rows = summarise(per_rank)
    args.out.write_text(json.dumps({"world": args.world, "dim": args.dim, "repeats": args.repeats,
                                    "backend": "gloo", "device": "cpu", "rows": rows}, indent=2) + "\n")
    print(markdown(rows, args.world, args.dim))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
