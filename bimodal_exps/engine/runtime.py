"""Per-process helpers of every entry point (clip.py, unimodal_exps/train.py, unimodal_exps/lincls.py):
the user-error type, the device, seeding, the rank-consistent finiteness check, autocast, the flags as JSON."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from models.gcl.collectives import rank_and_world


class UsageError(ValueError):
    """A user mistake in flags, config files or inputs; printed as one line, no traceback."""


def resolve_device(requested: str | None) -> torch.device:
    """`--device` (default: cuda when available, else cpu); a UsageError for CUDA on a machine without it."""
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def finite_on_every_rank(loss: torch.Tensor) -> bool:
    """True when the loss is finite on all ranks, so every rank takes the same skip decision (no DDP hang).

    One device-to-host read per call (and one all-reduce of a scalar under torch.distributed); its cost is
    measured in docs/benchmarks.md "Host syncs in the step loop".
    """
    finite = torch.isfinite(loss.detach()).float()
    if rank_and_world()[1] > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast context for `dtype` on `device` (None: disabled, fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def plain_args(args: Any) -> dict[str, Any]:
    """An argparse Namespace as JSON-able plain data (checkpoints must load with weights_only=True)."""
    return json.loads(json.dumps(vars(args), default=str))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` as indented JSON with a final newline."""
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def write_args(out_dir: str | Path, args: dict[str, Any], flag: str, name: str = "args.json") -> Path:
    """Create `out_dir` (the value of `flag`) and write the flags there as `name`; a UsageError naming `flag`
    when it cannot be written. Returns the folder."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / name, args)
    except OSError as error:
        raise UsageError(f"{flag} {out}: cannot write ({error.strerror})") from None
    return out
