"""Per-epoch schedules of the loss knobs (epochs are 0-based).

* γ, the inner learning rate of the moving average (docs/losses.md §2).
* η, the step size of iSogCLR's per-sample temperature update (docs/losses.md §5).
"""
from __future__ import annotations

import math

GAMMA_SCHEDULES = ("constant", "cosine")
ETA_SCHEDULES = ("const", "cosine", "exp")
ETA_COSINE_KINDS = ("quarter", "half")


def gamma_at(epoch: int, gamma_min: float, schedule: str, decay_epochs: int, one_at_epoch0: bool = False) -> float:
    """γ for `epoch`.

    `cosine` (FastCLIP): 1 at epoch 0, γ_min + (1−γ_min)·½(1 + cos(π e/E)) for 1 ≤ e < E, γ_min after.
    `constant`: γ_min, except 1 at epoch 0 when `one_at_epoch0` (FastCLIP forces γ = 1 in epoch 0;
    the SogCLR family relies on the first-visit initialisation instead).
    """
    if schedule not in GAMMA_SCHEDULES:
        raise ValueError(f"gamma_schedule must be one of {GAMMA_SCHEDULES}, got {schedule!r}")
    if not 0.0 < gamma_min <= 1.0:
        raise ValueError(f"sogclr_gamma must lie in (0, 1], got {gamma_min}")
    if epoch == 0 and (schedule == "cosine" or one_at_epoch0):
        return 1.0
    if schedule == "constant" or epoch >= decay_epochs:
        return gamma_min
    return gamma_min + (1.0 - gamma_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / decay_epochs))


def eta_at(epoch: int, num_epochs: int, eta_init: float, schedule: str, eta_min: float, exp_gamma: float,
           cosine_kind: str = "quarter", exp_parity: bool = False) -> float:
    """η for `epoch` of `num_epochs`.

    `const`: η_init. `cosine`: η_min + (η_init−η_min)·c with c = cos(π/2 · e/E) (`quarter`, the
    iSogCLR reference) or ½(1 + cos(π e/E)) (`half`). `exp`: (η_init−η_min)·κ^e + η_min, or with
    `exp_parity` the reference's off-by-one exponent e−1 (η ≈ 1.25·η_init at epoch 0 for κ = 0.8).
    """
    if schedule == "const":
        return eta_init
    if schedule == "cosine":
        if cosine_kind not in ETA_COSINE_KINDS:
            raise ValueError(f"eta_cosine must be one of {ETA_COSINE_KINDS}, got {cosine_kind!r}")
        frac = epoch / max(num_epochs, 1)
        c = math.cos(0.5 * math.pi * frac) if cosine_kind == "quarter" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return eta_min + (eta_init - eta_min) * c
    if schedule == "exp":
        return (eta_init - eta_min) * exp_gamma ** (epoch - 1 if exp_parity else epoch) + eta_min
    raise ValueError(f"eta_sched must be one of {ETA_SCHEDULES}, got {schedule!r}")
