"""Per-process helpers of every entry point (clip.py, unimodal_exps/train.py, unimodal_exps/lincls.py):
the user-error type, the device, seeding, the rank-consistent finiteness check, autocast, the flags as JSON."""
from __future__ import annotations

import json
import os
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
    """`requested` (default: cuda when available, else cpu); a UsageError for a malformed name, a device type
    this machine lacks or an index beyond its devices."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device {requested!r}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise UsageError(f"--device {requested}: {device.type.upper()} is not available on this machine")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {requested}: this machine has {count} {device.type} device(s), "
                         f"indices 0 to {count - 1}")
    return device


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`: free memory of a CUDA device, MemAvailable of the host
    (Linux) for the CPU; None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


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
