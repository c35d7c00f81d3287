"""`--device` of every entry script: a torch device this machine has, or a one-line UsageError."""
from __future__ import annotations

import os

import torch

from cli.flags import UsageError


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
