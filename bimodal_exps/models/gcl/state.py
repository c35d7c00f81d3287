"""Per-sample state writes: id bounds, deterministic duplicates, non-finite skipping (docs/losses.md §2).

State lives in 1-D buffers of length N (one slot per pair id, both directions keyed by the pair id).
Rows are written in global rank-major order; when an id occurs several times in the global batch
the **last occurrence wins**. The rule is implemented without a host sync and without relying on
the order of a scatter with duplicate indices: every duplicate writes the same (winning) value.
"""
from __future__ import annotations

import torch
from torch import Tensor


class SampleIdError(IndexError):
    """A pair id outside the per-sample state (an error, never a silent clamp); one line for the CLI."""


def check_ids(ids: Tensor, num_samples: int) -> Tensor:
    """Validate pair ids ([b] integers in [0, N)) and return them as int64.

    Costs one device-to-host sync on accelerators (the price of a clear error instead of a
    device-side assert or a silent clamp).
    """
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor of pair indices, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
    ids = ids.long()
    bad = (ids < 0) | (ids >= num_samples)
    if bool(bad.any()):
        first = int(ids[bad][0])
        raise SampleIdError(f"pair id {first} is out of range for the loss state of size num_samples={num_samples} "
                         f"(valid ids: 0..{num_samples - 1}; size the state from the data, e.g. --data_size)")
    return ids


def resolve_duplicates(ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """(ids sorted, values) where every copy of an id carries the value of its last occurrence."""
    sorted_ids, perm = torch.sort(ids, stable=True)
    n = ids.numel()
    positions = torch.arange(n, device=ids.device)
    is_last = torch.ones(n, dtype=torch.bool, device=ids.device)
    is_last[:-1] = sorted_ids[1:] != sorted_ids[:-1]
    run_end = torch.where(is_last, positions, torch.full_like(positions, n))
    run_end = torch.flip(torch.cummin(torch.flip(run_end, [0]), dim=0).values, [0])
    return sorted_ids, values[perm[run_end]]


@torch.no_grad()
def write_rows(buffers: list[Tensor], ids: Tensor, values: Tensor) -> Tensor:
    """Write `values[:, k]` into `buffers[k][ids]`; rows with a non-finite entry are skipped.

    `ids` [n] and `values` [n, K] are in global rank-major order. Returns the number of skipped
    rows (a 0-dim int64 tensor; no host sync).
    """
    sorted_ids, rows = resolve_duplicates(ids, values)
    finite = torch.isfinite(rows).all(dim=1)
    for k, buf in enumerate(buffers):
        new = rows[:, k].to(buf.dtype)
        buf[sorted_ids] = torch.where(finite, new, buf[sorted_ids])
    return (~torch.isfinite(values).all(dim=1)).sum()
