"""Pre-training checkpoints: encoder, per-image loss state, optimiser, grad scaler, RNG, epoch, args.

Written atomically and read with `weights_only=True` (bimodal_exps/engine/checkpoint.py). Names follow the
seed: `checkpoint_<epoch:04d>.pth.tar` (0-based index of the finished epoch) and `checkpoint_last.pth.tar`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.checkpoint import (FORMAT_VERSION, capture_rng_state, link_atomic, load_checkpoint, load_state_strict,
                               restore_rng_state, save_atomic)

LAST = "checkpoint_last.pth.tar"


@dataclass
class TrainingState:
    """What a checkpoint holds and a resume restores."""

    encoder: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    args: dict[str, Any]


def numbered_name(epoch: int) -> str:
    """File name of the checkpoint kept after (0-based) epoch `epoch`."""
    return f"checkpoint_{epoch:04d}.pth.tar"


def save(state: TrainingState, out_dir: Path, epochs_done: int, steps_done: int, numbered: bool) -> Path:
    """Write `checkpoint_last.pth.tar` (and the numbered copy when asked); return the path written."""
    payload = {
        "format_version": FORMAT_VERSION,
        "arch": state.args["arch"],
        "model": state.encoder.state_dict(),
        "loss": state.loss_fn.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": epochs_done,
        "step": steps_done,
        "args": state.args,
    }
    last = out_dir / LAST
    if not numbered:
        save_atomic(payload, last)
        return last
    path = out_dir / numbered_name(epochs_done - 1)
    save_atomic(payload, path)
    link_atomic(path, last)
    return path


def resume(state: TrainingState, path: str | Path) -> int:
    """Restore everything from `path` (strict key/shape checks); return the number of epochs done."""
    ckpt = load_checkpoint(path)
    load_state_strict(state.encoder, ckpt["model"], "encoder", path)
    load_state_strict(state.loss_fn, ckpt["loss"], "loss state (per-image estimates; same data set?)", path)
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    return int(ckpt["epoch"])
