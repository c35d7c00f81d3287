"""The epoch loop of a run: train, evaluate when due, log (D6 files), checkpoint, resume."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.checkpoint import (FORMAT_VERSION, capture_rng_state, link_atomic, load_checkpoint, load_state_strict,
                               restore_rng_state, save_atomic)
from engine.distributed import barrier, world
from engine.evaluation import EvalSuite
from engine.logger import append_jsonl, format_results_table
from engine.optim import LRSchedule, Optimizers
from engine.train import StepConfig, train_one_epoch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Run:
    """Everything the epoch loop needs; built by clip.py."""

    task: torch.nn.Module               # model + loss, possibly DDP-wrapped
    model: torch.nn.Module              # the unwrapped two-tower model
    loss_fn: torch.nn.Module
    optimizers: Optimizers
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    loader: DataLoader
    sampler: Any                        # anything with set_epoch(epoch): a sampler or a webdataset pipeline
    evaluator: EvalSuite
    step_config: StepConfig
    output_dir: Path
    args: dict[str, Any]
    epochs: int
    seed: int
    save_freq: int = 1
    eval_freq: int = 0
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_payload(run: Run, epochs_done: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": run.model.state_dict(),
        "loss": run.loss_fn.state_dict(),
        "optimizer": run.optimizers.main.state_dict(),
        "optimizers_extra": {"tempnet": run.optimizers.tempnet.state_dict()} if run.optimizers.tempnet else {},
        "scheduler": run.schedule.scheduler.state_dict() if run.schedule.scheduler else {},
        "scaler": run.scaler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": epochs_done,
        "step": epochs_done * len(run.loader),
        "args": run.args,
    }


def resume(run: Run, path: str) -> None:
    """Restore model, loss state, optimisers, scheduler, scaler, RNG and epoch from `path`."""
    ckpt = load_checkpoint(path)
    load_state_strict(run.model, ckpt["model"], "model", path)
    load_state_strict(run.loss_fn, ckpt["loss"], "loss state", path)
    run.optimizers.main.load_state_dict(ckpt["optimizer"])
    if run.optimizers.tempnet is not None:
        run.optimizers.tempnet.load_state_dict(ckpt["optimizers_extra"]["tempnet"])
    if run.schedule.scheduler is not None and ckpt.get("scheduler"):
        run.schedule.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"])
    run.start_epoch = int(ckpt["epoch"])
    print(f"resumed from {path}: {run.start_epoch} epoch(s) done")


def _save(run: Run, epochs_done: int, numbered: bool) -> None:
    payload = checkpoint_payload(run, epochs_done)
    last = run.output_dir / "checkpoint_last.pth"
    if numbered:
        numbered_path = run.output_dir / f"checkpoint_{epochs_done}.pth"
        save_atomic(payload, numbered_path)
        link_atomic(numbered_path, last)
    else:
        save_atomic(payload, last)


def evaluate_and_log(run: Run, epoch_record: dict[str, Any]) -> dict[str, float]:
    """Evaluate the unwrapped model; rank 0 appends the legacy JSON-lines logs."""
    retrieval, zeroshot = run.evaluator.run(run.model)
    if world()[0] == 0:
        if retrieval:
            append_jsonl(run.output_dir / "coco_log.txt",
                         {**{f"val_{k}": v for k, v in retrieval.items()}, "epoch": epoch_record["epoch"],
                          "data": "coco"})
        if zeroshot:
            append_jsonl(run.output_dir / "zeroshot_imagenet_log.txt", {**zeroshot, "epoch": epoch_record["epoch"]})
    return {**{f"val_{k}": v for k, v in retrieval.items()}, **zeroshot}


def fit(run: Run) -> dict[str, float]:
    """Train epochs [start_epoch, epochs); return the final evaluation metrics."""
    rank, _ = world()
    final_metrics: dict[str, float] = {}
    for epoch in range(run.start_epoch, run.epochs):
        seed_everything(run.seed + rank + 1000 * epoch)
        run.sampler.set_epoch(epoch)
        run.loss_fn.set_epoch(epoch, run.epochs)
        run.schedule.start_epoch(epoch)
        train_stats = train_one_epoch(run.task, run.loader, run.optimizers, run.schedule, run.scaler, epoch,
                                      run.step_config)
        record: dict[str, Any] = {"epoch": epoch, "lr": train_stats.pop("lr"),
                                  **{f"train_{k}": v for k, v in train_stats.items()}}
        last_epoch = epoch + 1 == run.epochs
        if last_epoch or (run.eval_freq and (epoch + 1) % run.eval_freq == 0):
            final_metrics = evaluate_and_log(run, record)
            record.update(final_metrics)
        if rank == 0:
            append_jsonl(run.output_dir / "log.txt", record)
            _save(run, epoch + 1, numbered=last_epoch or (epoch + 1) % run.save_freq == 0)
            print(f"epoch {epoch}: " + "  ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                  if isinstance(v, float) and k.startswith(("train_loss", "val_r_mean",
                                                                                           "zeroshot_top1"))))
        run.history.append(record)
        barrier()
    if rank == 0 and final_metrics:
        print(format_results_table({k.removeprefix("val_"): v for k, v in final_metrics.items()}))
    return final_metrics
