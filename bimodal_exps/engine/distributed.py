"""Process-group set-up for torchrun, SLURM `srun` and single-process runs, plus small collectives.

One place decides rank/world size (README "Multi-GPU and multi-node"): torchrun exports RANK/WORLD_SIZE/LOCAL_RANK;
under `srun` every task gets SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) and SLURM_LOCALID, and
the rendezvous address is the first host of the step's node list (`scontrol show hostnames`); otherwise
the run is a single process. nccl on CUDA, gloo on CPU. `--world_size`, when given, must agree with the
launcher (a stale value in a Slurm script fails loudly instead of hanging at the rendezvous).
"""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from models.gcl.collectives import rank_and_world

DEFAULT_PORT_BASE = 20000  # MASTER_PORT under srun: DEFAULT_PORT_BASE + job id mod 20000 (jobs sharing a node differ)


class DistributedSetupError(RuntimeError):
    """The launcher's environment and the flags disagree; the message says how to fix it."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torchrun", "slurm" or "none"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_var(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None:
        if default is None:
            raise DistributedSetupError(f"environment variable {name} is missing")
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None


def detect_launcher(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read rank, world size and local rank from the launcher's environment variables (no side effects).

    torchrun wins over SLURM (torchrun started inside a Slurm allocation sets RANK itself). SLURM counts
    only with several tasks in the step: a batch script of a 1-task job also has SLURM_PROCID=0.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world_size = _int_var(env, "RANK"), _int_var(env, "WORLD_SIZE")
        return _checked(DistEnv(rank, world_size, _int_var(env, "LOCAL_RANK", 0), "torchrun"))
    if "SLURM_PROCID" in env:
        ntasks = _int_var(env, "SLURM_STEP_NUM_TASKS", _int_var(env, "SLURM_NTASKS", 1))
        if ntasks > 1:
            return _checked(DistEnv(_int_var(env, "SLURM_PROCID"), ntasks, _int_var(env, "SLURM_LOCALID", 0), "slurm"))
    return DistEnv()


def _checked(env: DistEnv) -> DistEnv:
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise DistributedSetupError(f"inconsistent {env.launcher} environment: rank {env.rank}, world size "
                                    f"{env.world_size}, local rank {env.local_rank}")
    return env


def slurm_master_addr(environ: Mapping[str, str]) -> str:
    """First host of the step's (else the job's) node list; `scontrol show hostnames` expands ranges."""
    nodelist = next((environ[k] for k in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                     if environ.get(k)), None)
    if nodelist is None:
        return "127.0.0.1"
    if not any(c in nodelist for c in "[,"):
        return nodelist  # a single plain host name
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        raise DistributedSetupError(f"cannot expand the Slurm node list {nodelist!r}: scontrol is not on PATH; "
                                    f"export MASTER_ADDR=<first host> before srun")
    hosts = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    if not hosts.stdout.split():
        raise DistributedSetupError(f"scontrol show hostnames {nodelist!r} printed no host")
    return hosts.stdout.split()[0]


def slurm_rendezvous(environ: Mapping[str, str], env: DistEnv) -> dict[str, str]:
    """The env:// variables an srun task lacks (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK).

    Values already set win, so a script may export MASTER_ADDR/MASTER_PORT itself (as DistTempNet's scripts do).
    """
    wanted = {"RANK": str(env.rank), "WORLD_SIZE": str(env.world_size), "LOCAL_RANK": str(env.local_rank)}
    if "MASTER_ADDR" not in environ:
        wanted["MASTER_ADDR"] = slurm_master_addr(environ)
    if "MASTER_PORT" not in environ:
        wanted["MASTER_PORT"] = str(DEFAULT_PORT_BASE + _int_var(environ, "SLURM_JOB_ID", 0) % 20000)
    return {name: value for name, value in wanted.items() if name not in environ}


def local_device(env: DistEnv, device_type: str) -> torch.device:
    """The device of this process: `cuda:<local rank>` (modulo the visible GPUs), else the CPU."""
    if device_type != "cuda":
        return torch.device(device_type)
    return torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))


def init_distributed(want: bool | None, device_type: str, world_size_flag: int | None = None,
                     dist_url: str = "env://", timeout_s: float = 1800.0) -> DistEnv:
    """Initialise torch.distributed when the launcher started several processes.

    `want=None` means "on when launched with world size > 1" (README); `want=False` with several processes
    is refused (each process would train alone and overwrite the others' outputs). `timeout_s` bounds
    every collective, so a lost peer ends the job instead of hanging it.
    """
    env = detect_launcher()
    if world_size_flag is not None and world_size_flag != env.world_size:
        raise DistributedSetupError(f"--world_size {world_size_flag} disagrees with the launcher "
                                    f"({env.launcher}: {env.world_size} process(es))")
    if env.world_size == 1:
        if want:
            print("--distributed was given but the job has a single process; running without a process group.")
        return env
    if want is False:
        raise DistributedSetupError(f"--no-distributed, but {env.launcher} started {env.world_size} processes: "
                                    f"drop --no-distributed or launch a single process")
    if env.launcher == "slurm":
        os.environ.update(slurm_rendezvous(os.environ, env))
    join_group(env, device_type, dist_url, timeout_s)
    return env


def join_group(env: DistEnv, device_type: str, init_method: str, timeout_s: float) -> None:
    """Join the default process group as `env.rank` of `env.world_size`: nccl on CUDA (this process on its
    `local_device`), gloo on CPU; `timeout_s` bounds every collective."""
    if device_type == "cuda":
        torch.cuda.set_device(local_device(env, device_type))
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method=init_method,
                            rank=env.rank, world_size=env.world_size, timeout=datetime.timedelta(seconds=timeout_s))


def wrap_ddp(module: torch.nn.Module, device: torch.device,
             find_unused_parameters: bool = False) -> torch.nn.parallel.DistributedDataParallel:
    """DDP over `module` on this process's device. Buffers are broadcast once, at construction, and never in
    forward (`forward_sync_buffers=False`), so per-sample loss state stays each rank's own."""
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False,
        find_unused_parameters=find_unused_parameters)


def silence_non_main(env: DistEnv) -> None:
    """Only rank 0 prints progress and results: stdout of the other ranks goes to /dev/null (stderr stays)."""
    if not env.is_main:
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def shutdown_distributed() -> None:
    """Orderly end of a successful run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def abort_process(exit_code: int) -> None:
    """End a failed rank now, without the collective shutdown that would wait for its peers.

    The peers see the closed connections at their next collective (gloo) or are stopped by the launcher
    (torchrun, `srun --kill-on-bad-exit`); the collective timeout bounds the rest.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(exit_code)


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def _rows_per_rank(total: int, world_size: int, align: int) -> int:
    per_rank = -(-total // world_size)
    return -(-per_rank // align) * align


def shard_range(total: int, align: int = 1) -> range:
    """Contiguous slice of `range(total)` owned by this rank; every slice but the last holds a multiple
    of `align` rows, so batches of `align` rows are the same as in a single process (exact evaluation)."""
    rank, world_size = rank_and_world()
    per_rank = _rows_per_rank(total, world_size, align)
    return range(min(rank * per_rank, total), min((rank + 1) * per_rank, total))


def gather_shards(local: torch.Tensor, total: int, align: int = 1) -> torch.Tensor:
    """Concatenate the per-rank shards of `shard_range(total, align)` back into `total` rows (one all_gather)."""
    _, world_size = rank_and_world()
    if world_size == 1:
        return local
    per_rank = _rows_per_rank(total, world_size, align)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:total]


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's `value` (picklable) on every rank; a collective, so it also waits for rank 0."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

