"""The unimodal scripts' `--precision` (device, seeding, autocast and the finiteness check are shared with
clip.py in bimodal_exps/engine/runtime.py)."""
from __future__ import annotations

import torch

from engine.runtime import UsageError


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of `--precision` (None = fp32). Mixed precision needs CUDA."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise UsageError(f"--precision {precision} needs CUDA; use --precision fp32 (or auto) on {device.type}")
    return torch.bfloat16 if precision == "bf16" else torch.float16

