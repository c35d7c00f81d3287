"""Graceful stop on SIGTERM / SIGUSR1 (SLURM pre-emption, `--signal`, `scancel`, torchrun shutdown).

The signal handler only records the request. The training loop asks `StopSignal.requested()` at every
step boundary; under torch.distributed the ranks agree through a MAX all-reduce of the recorded signal,
so every rank stops after the same step even when only one of them was signalled. The trainer then
writes `checkpoint_last.pth` and raises `Preempted`; clip.py optionally requeues the Slurm job
(`scontrol requeue $SLURM_JOB_ID`) and exits with 128 + the signal number. A second signal while a stop
is pending ends the process at once (the default action).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from types import FrameType

import torch
import torch.distributed as dist

from models.gcl.collectives import rank_and_world

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Training stopped at a step boundary on request; `checkpoint_last.pth` holds the state."""

    def __init__(self, signum: int, epoch: int, iteration: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at epoch {epoch}, iteration {iteration}")
        self.signum, self.epoch, self.iteration = signum, epoch, iteration

    @property
    def exit_code(self) -> int:
        """128 + signal number, what a shell reports for a process ended by that signal."""
        return 128 + self.signum


class StopSignal:
    """Installs the handlers and answers "stop now?" identically on every rank."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received = 0  # signal number of the first request, 0 if none
        self._previous: dict[int, object] = {}
        self._group: dist.ProcessGroup | None = None

    def install(self) -> StopSignal:
        """Take over the signals (main thread only). Under nccl the agreement runs on a gloo side group, so
        it never waits for the GPU stream."""
        if rank_and_world()[1] > 1 and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum

    def requested(self) -> int:
        """Signal number every rank agrees to stop for (the largest received), 0 to go on."""
        if rank_and_world()[1] == 1:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64)
        if self._group is None and dist.get_backend() != "gloo":
            raise RuntimeError("StopSignal.requested() needs install() first under a non-gloo backend")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())


def requeue_slurm_job(environ: Mapping[str, str] | None = None) -> str:
    """Ask Slurm to requeue this job (`scontrol requeue $SLURM_JOB_ID`); return a one-line outcome."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return "not requeued: SLURM_JOB_ID is not set (not a Slurm job)"
    scontrol = shutil.which("scontrol", path=env.get("PATH"))
    if scontrol is None:
        return "not requeued: scontrol is not on PATH"
    result = subprocess.run([scontrol, "requeue", job_id], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"requeue of job {job_id} failed: {result.stderr.strip() or result.returncode}"
    return f"job {job_id} requeued"
