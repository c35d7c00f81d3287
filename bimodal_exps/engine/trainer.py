"""The epoch loop of a run: train, evaluate when due, log (the files of README "Outputs"), checkpoint, resume.

Checkpoints record the position of the run: `epoch` (epochs done) and, when written inside an epoch
(`--save_every_steps`, a stop signal, too many non-finite losses), `mid_epoch` with the steps done in it
and every rank's RNG state. Resuming such a checkpoint skips the batches already trained on (the sampler
order is a function of seed and epoch) and restores the RNG; the learning rates are a function of the
position alone (`engine.optim.LRSchedule.apply`) and need nothing restored. The run ends with the same
weights as an uninterrupted one, for any number of DataLoader workers (augmentations are seeded per sample,
`dataset.sample_rng`). The epoch's logged train statistics then average only the steps after the resume point.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader

from engine.checkpoint import (FORMAT_VERSION, CheckpointError, NonFiniteModel, capture_rng_state,
                               check_resume_keys, first_non_finite, link_atomic, load_checkpoint, load_state_strict,
                               prune_numbered, refuse_non_finite, remove_stale_temporaries, restore_rng_state,
                               save_atomic)
from engine.distributed import barrier
from engine.evaluation import EvalSuite
from engine.logger import append_jsonl, format_results_table, write_eval_logs, write_eval_results
from engine.optim import LRSchedule, Optimizers
from engine.preemption import Preempted
from engine.runtime import seed_everything
from engine.tracking import Tracker
from engine.train import EpochStart, StepConfig, TooManySkippedSteps, train_one_epoch
from models.gcl.collectives import rank_and_world


@runtime_checkable
class MidEpochSampler(Protocol):
    """A sampler that can begin the current epoch at batch k (dataset.sampler.ResumableDistributedSampler)."""

    def set_epoch(self, epoch: int) -> None: ...

    def start_at_batch(self, batch: int) -> None: ...


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
    save_every_steps: int = 0           # also write checkpoint_last.pth every N steps inside epochs (0: off)
    keep_checkpoints: int = 0           # keep only the N newest checkpoint_<epoch>.pth (0: all)
    tracker: Tracker | None = None      # --report_to: eval scalars per epoch (train scalars via StepConfig.on_log)
    epoch_start: Callable[[int], None] | None = None  # before an epoch's first step (ProtoCLIP's clustering step)
    start_epoch: int = 0
    start: EpochStart = EpochStart()    # where start_epoch begins (a mid-epoch resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_per_epoch: int = field(init=False)

    def __post_init__(self) -> None:
        self.steps_per_epoch = len(self.loader)


def checkpoint_payload(run: Run, epochs_done: int, iteration: int = 0) -> dict[str, Any]:
    """Everything `resume` restores, at the point `iteration` steps into epoch `epochs_done` (mid_epoch
    is added by `save_position`)."""
    return {
        "format_version": FORMAT_VERSION,
        "model": run.model.state_dict(),
        "loss": run.loss_fn.state_dict(),
        "optimizer": run.optimizers.main.state_dict(),
        "optimizers_extra": {"own": run.optimizers.own.state_dict()} if run.optimizers.own else {},
        "scaler": run.scaler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": epochs_done,
        "step": epochs_done * run.steps_per_epoch + iteration,
        "args": run.args,
    }


def resume(run: Run, path: str) -> None:
    """Restore model, loss state, optimisers, scaler, RNG and position from `path` (the learning rates follow
    from the position)."""
    ckpt = load_checkpoint(path)
    check_resume_keys(ckpt, path)
    load_state_strict(run.model, ckpt["model"], "model", path)
    load_state_strict(run.loss_fn, ckpt["loss"], "loss state", path)
    try:
        run.optimizers.main.load_state_dict(ckpt["optimizer"])
        if run.optimizers.own is not None:
            run.optimizers.own.load_state_dict(ckpt["optimizers_extra"]["own"])
        run.scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        run.start_epoch = int(ckpt["epoch"])
        run.start = _resume_point(run, ckpt.get("mid_epoch"), path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the training state cannot be restored ({type(error).__name__}: "
                              f"{error}); was it written by this project's clip.py?") from None
    refuse_non_finite({"model": run.model, "loss": run.loss_fn}, path)
    print(f"resumed from {path}: {run.start_epoch} epoch(s)"
          + (f" and {run.start.iteration} step(s) of epoch {run.start_epoch}" if run.start.iteration else "") + " done")


def _order_key(sampler: Any) -> str:
    """What else fixes the sampler's batch order (webdataset: readers per rank); "" for a plain sampler."""
    return getattr(sampler, "order_key", "")


def _resume_point(run: Run, mid_epoch: dict[str, Any] | None, path: str) -> EpochStart:
    """Where the resumed epoch begins: after the checkpoint's steps when this run can continue exactly there
    (same batches per epoch, world size and batch size, a sampler that can skip), else at its first batch."""
    if mid_epoch is None:
        return EpochStart()
    rank, world_size = rank_and_world()
    saved = (mid_epoch["steps_per_epoch"], mid_epoch["world_size"], mid_epoch["batch_size"],
             mid_epoch.get("order_key", ""))
    here = (run.steps_per_epoch, world_size, run.args.get("batch_size_train"), _order_key(run.sampler))
    if not isinstance(run.sampler, MidEpochSampler):
        reason = "the training loader cannot start inside an epoch"
    elif saved != here:
        reason = (f"it was written with (steps per epoch, world size, batch size, loader) = {saved}, this run has "
                  f"{here}")
    else:
        return EpochStart(int(mid_epoch["iteration"]), mid_epoch["rng"][rank])
    print(f"note: {path} was written after step {mid_epoch['iteration']} of epoch {run.start_epoch}, but {reason}: "
          f"epoch {run.start_epoch} restarts from its first batch")
    return EpochStart()


def check_finite_weights(run: Run, where: str) -> None:
    """Raise NonFiniteModel naming the first NaN/Inf parameter of the model or loss (a diverged model is
    never evaluated, nor saved over the last good checkpoint)."""
    name = first_non_finite({"model": run.model, "loss": run.loss_fn})
    if name is not None:
        raise NonFiniteModel(f"non-finite weights {where} (first: {name} holds NaN/Inf): the run diverged; lower "
                             f"--lr or set --grad_clip; {_last_good(run)}")


def _last_good(run: Run) -> str:
    """Which checkpoint a run that stops for a diverged model leaves (it never saves the diverged state)."""
    last = run.output_dir / "checkpoint_last.pth"
    return f"{last} is the last good checkpoint" if last.is_file() else "no checkpoint was written"


def _save(run: Run, epochs_done: int, numbered: bool) -> None:
    payload = checkpoint_payload(run, epochs_done)
    last = run.output_dir / "checkpoint_last.pth"
    if numbered:
        numbered_path = run.output_dir / f"checkpoint_{epochs_done}.pth"
        save_atomic(payload, numbered_path)
        link_atomic(numbered_path, last)
        prune_numbered(run.output_dir, run.keep_checkpoints)
    else:
        save_atomic(payload, last)


def _rng_of_every_rank() -> list[dict[str, Any]]:
    """The RNG states of all ranks, indexed by rank (a collective under torch.distributed)."""
    state = capture_rng_state()
    _, world_size = rank_and_world()
    if world_size == 1:
        return [state]
    states: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def save_position(run: Run, epoch: int, iteration: int) -> Path:
    """Write `checkpoint_last.pth` after `iteration` steps of epoch `epoch`, with every rank's RNG state.

    Every rank takes part (the RNG gather), rank 0 writes, all ranks wait for it. Returns the path.
    """
    check_finite_weights(run, f"at epoch {epoch}, iteration {iteration}")
    last = run.output_dir / "checkpoint_last.pth"
    rng = _rng_of_every_rank()
    if rank_and_world()[0] == 0:
        payload = checkpoint_payload(run, epoch, iteration)
        payload["mid_epoch"] = {"iteration": iteration, "steps_per_epoch": run.steps_per_epoch,
                                "world_size": len(rng), "batch_size": run.args.get("batch_size_train"), "rng": rng,
                                "order_key": _order_key(run.sampler)}
        save_atomic(payload, last)
    barrier()
    return last


def save_interrupted(run: Run, stop: Preempted) -> None:
    """Write `checkpoint_last.pth` after `stop.iteration` steps of epoch `stop.epoch` (all ranks call this)."""
    path = save_position(run, stop.epoch, stop.iteration)
    if rank_and_world()[0] == 0:
        print(f"{stop}: wrote {path}")


def _after_step(run: Run, epoch: int, iterations_done: int) -> None:
    """Per-step hook: the `--save_every_steps` checkpoint inside an epoch (the epoch end saves anyway)."""
    global_step = epoch * run.steps_per_epoch + iterations_done
    if run.save_every_steps and global_step % run.save_every_steps == 0 and iterations_done < run.steps_per_epoch:
        save_position(run, epoch, iterations_done)


def evaluate_and_log(run: Run, epoch_record: dict[str, Any]) -> dict[str, float]:
    """Evaluate the unwrapped model (the families due after `epoch_record["epoch"] + 1` epochs); rank 0 appends
    the legacy JSON-lines logs and rewrites eval_results.json with the latest metrics."""
    epochs_done = epoch_record["epoch"] + 1
    retrieval, zeroshot, extra = run.evaluator.run(run.model, epochs_done, run.epochs)
    metrics = {**{f"val_{k}": v for k, v in retrieval.items()}, **zeroshot, **extra}
    if run.tracker is not None:
        run.tracker.scalars("eval", metrics, epochs_done)
    if rank_and_world()[0] == 0:
        write_eval_logs(run.output_dir, retrieval, zeroshot, epoch_record["epoch"], run.evaluator.zeroshot_name)
        write_eval_results(run.output_dir / "eval_results.json", metrics, epoch=epochs_done)
    return metrics


def warn_if_tau_at_floor(loss_fn: torch.nn.Module, epoch: int) -> bool:
    """Print one warning line when more than half of the visited per-sample τ sit at --tau_min; True if printed."""
    fraction = loss_fn.fraction_at_tau_min()
    if fraction is None or fraction <= 0.5:
        return False
    print(f"warning: after epoch {epoch}, {fraction:.0%} of the per-sample temperatures sit at --tau_min; a smaller "
          "τ step size (--eta_init, or --lr_tau for fastclip_v2) keeps them off the floor (docs/losses.md §5)")
    return True


def fit(run: Run) -> dict[str, float]:
    """Train epochs [start_epoch, epochs); return the final evaluation metrics."""
    rank, _ = rank_and_world()
    if rank == 0 and (stale := remove_stale_temporaries(run.output_dir)):
        print(f"removed {len(stale)} incomplete checkpoint file(s) left by an interrupted save")
    final_metrics: dict[str, float] = {}
    tau_floor_warned = False
    if run.start_epoch == 0 and not run.start.iteration and run.evaluator.due(0, run.epochs):  # --eval_first
        record = {"epoch": -1, **evaluate_and_log(run, {"epoch": -1})}
        if rank == 0:
            append_jsonl(run.output_dir / "log.txt", record)
    for epoch in range(run.start_epoch, run.epochs):
        seed_everything(run.seed + rank + 1000 * epoch)
        run.sampler.set_epoch(epoch)
        start = run.start if epoch == run.start_epoch else EpochStart()
        if start.iteration:
            run.sampler.start_at_batch(start.iteration)
        run.loss_fn.set_epoch(epoch, run.epochs)
        if run.epoch_start is not None and not start.iteration:  # a mid-epoch checkpoint holds its result
            run.epoch_start(epoch)
        try:
            train_stats = train_one_epoch(run.task, run.loader, run.optimizers, run.schedule, run.scaler, epoch,
                                          run.step_config, start, partial(_after_step, run))
        except Preempted as stop:
            save_interrupted(run, stop)
            raise
        except TooManySkippedSteps as stop:
            stop.checkpoint = str(save_position(run, stop.epoch, stop.iteration))
            raise
        check_finite_weights(run, f"after epoch {epoch}")
        record: dict[str, Any] = {"epoch": epoch, "lr": train_stats.pop("lr"),
                                  **{f"train_{k}": v for k, v in train_stats.items()}}
        last_epoch = epoch + 1 == run.epochs
        if run.evaluator.due(epoch + 1, run.epochs):
            try:
                final_metrics = evaluate_and_log(run, record)
            except NonFiniteModel as error:
                raise NonFiniteModel(f"after epoch {epoch}, {error}; {_last_good(run)}") from None
            record.update(final_metrics)
        if rank == 0 and not tau_floor_warned:
            tau_floor_warned = warn_if_tau_at_floor(run.loss_fn, epoch)
        if rank == 0:
            append_jsonl(run.output_dir / "log.txt", record)
            _save(run, epoch + 1, numbered=last_epoch or (epoch + 1) % run.save_freq == 0)
            print(f"epoch {epoch}: " + "  ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                  if isinstance(v, float) and k.startswith(("train_loss", "val_r_mean",
                                                                                           "zeroshot_top1"))))
        run.history.append(record)
        if run.tracker is not None:
            run.tracker.flush()
        barrier()
    if rank == 0 and final_metrics:
        print(format_results_table({k.removeprefix("val_"): v for k, v in final_metrics.items()}))
    return final_metrics
