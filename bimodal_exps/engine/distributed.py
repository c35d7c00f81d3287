"""Process-group set-up for torchrun, SLURM `srun` and single-process runs, plus small collectives.

One place decides rank/world size: torchrun exports RANK/WORLD_SIZE/LOCAL_RANK; under `srun` every task
gets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and MASTER_ADDR comes from the node list; otherwise the run
is a single process. nccl on CUDA, gloo on CPU.
"""
from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def detect_launcher(environ: dict[str, str] | None = None) -> DistEnv:
    """Read rank and world size from the launcher's environment variables (no side effects)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), "slurm")
    return DistEnv()


def _slurm_master_addr(environ: dict[str, str]) -> str:
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return hosts.stdout.split()[0]


def init_distributed(want: bool | None, device_type: str, world_size_flag: int | None = None,
                     dist_url: str = "env://", timeout_minutes: int = 30) -> DistEnv:
    """Initialise torch.distributed when the launcher started several processes (and `want` allows it).

    `want=None` means "on when launched with world size > 1" (D2). `world_size_flag`, when given, must
    agree with the launcher, which catches a stale `--world_size` in a Slurm script.
    """
    env = detect_launcher()
    if want is False or env.world_size == 1:
        if want and env.world_size == 1:
            print("--distributed was given but the job has a single process; running without a process group.")
        return DistEnv(launcher=env.launcher) if env.world_size == 1 else DistEnv()
    if world_size_flag not in (None, env.world_size):
        raise ValueError(f"--world_size {world_size_flag} disagrees with the launcher ({env.launcher}: {env.world_size} processes)")
    if env.launcher == "slurm":
        os.environ.setdefault("MASTER_ADDR", _slurm_master_addr(os.environ))
        os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", "0")) % 1000))
        os.environ.setdefault("RANK", str(env.rank))
        os.environ.setdefault("WORLD_SIZE", str(env.world_size))
        os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, init_method=dist_url, rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return env


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shard_range(total: int) -> range:
    """Contiguous slice of `range(total)` owned by this rank (evaluation splits its work this way)."""
    rank, world_size = world()
    per_rank = -(-total // world_size)
    return range(min(rank * per_rank, total), min((rank + 1) * per_rank, total))


def gather_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate the per-rank contiguous shards of `shard_range(total)` back into `total` rows."""
    _, world_size = world()
    if world_size == 1:
        return local
    per_rank = -(-total // world_size)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:total]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values
