"""Per-process runtime choices: device, autocast precision, seeding, a rank-consistent finiteness check."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cli.device import resolve_device
from engine.distributed import world
from unimodal.options import UsageError

__all__ = ["autocast", "finite_on_every_rank", "resolve_device", "resolve_precision", "seed_everything",
           "write_args"]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of `--precision` (None = fp32). Mixed precision needs CUDA."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise UsageError(f"--precision {precision} needs CUDA; use --precision fp32 (or auto) on {device.type}")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast context for `dtype` (None: disabled, fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def finite_on_every_rank(loss: torch.Tensor) -> bool:
    """True when the loss is finite on all ranks, so every rank takes the same skip decision (no DDP hang)."""
    finite = torch.isfinite(loss.detach()).float()
    if world()[1] > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def write_args(out_dir: str | Path, args: dict[str, Any], name: str = "args.json") -> Path:
    """Create `out_dir` and write the flags there as `name`; a UsageError when it cannot be written."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--save_dir {out}: cannot write ({error.strerror})") from None
    return out
