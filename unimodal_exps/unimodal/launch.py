"""How a run becomes processes: torchrun / srun (detected), SogCLR's `--multiprocessing-distributed`, or one process.

Seed semantics (MoCo codebase): `--world-size` counts nodes and `--rank` is the node rank; with
`--multiprocessing-distributed` every node starts `--nproc-per-node` processes (default: one per GPU) that
join the group at `--dist-url` with global rank node_rank·nproc + local_rank. Without it, `--world-size N`
(N > 1) makes this process rank `--rank` of N. A torchrun or multi-task srun launch wins over these flags
(rendezvous through the launcher's environment, as in bimodal_exps/engine/distributed.py).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.multiprocessing as mp

from engine.distributed import (DistEnv, abort_process, detect_launcher, init_distributed, join_group,
                                shutdown_distributed, silence_non_main)
from engine.runtime import UsageError
from unimodal.errors import USER_ERRORS

Worker = Callable[[DistEnv, "Launch", argparse.Namespace], None]


@dataclass(frozen=True)
class Launch:
    """Process layout: `spawn` processes started here (0: run in this process), group size and rendezvous."""

    world_size: int
    node_rank: int
    procs_per_node: int
    spawn: int
    init_method: str  # "env://" under torchrun/srun, else --dist-url

    def rank_of(self, local_rank: int) -> int:
        """Global rank of this node's process `local_rank`."""
        return self.node_rank * self.procs_per_node + local_rank


def plan_launch(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Launch:
    """The layout requested by the flags and the launcher's environment (no side effects)."""
    env = detect_launcher(environ)
    if env.world_size > 1:
        local = int((environ or os.environ).get("LOCAL_WORLD_SIZE", "1"))
        return Launch(env.world_size, 0, max(local, 1), 0, "env://")
    nodes, node_rank = max(args.world_size, 1), max(args.rank, 0)
    if node_rank >= nodes:
        raise UsageError(f"--rank {args.rank} is not below --world-size {args.world_size}")
    if args.multiprocessing_distributed:
        nproc = args.nproc_per_node or (torch.cuda.device_count() if _wants_cuda(args) else 1) or 1
        return Launch(nodes * nproc, node_rank, nproc, nproc if nodes * nproc > 1 else 0, args.dist_url)
    return Launch(nodes, node_rank, 1, 0, args.dist_url)


def _wants_cuda(args: argparse.Namespace) -> bool:
    """Whether this run puts its processes on GPUs (--device, else CUDA when available)."""
    return (args.device or "cuda").startswith("cuda") and torch.cuda.is_available()


def workers_per_process(args: argparse.Namespace, launch: Launch) -> int:
    """--workers is per node (seed semantics): split over the node's processes, rounding up."""
    return math.ceil(max(args.workers, 0) / launch.procs_per_node)


def _join_group(launch: Launch, local_rank: int, args: argparse.Namespace) -> DistEnv:
    """Initialise the process group of this process (nothing for a single process)."""
    timeout = 60.0 * args.dist_timeout
    device_type = "cuda" if _wants_cuda(args) else "cpu"
    if launch.init_method == "env://":
        return init_distributed(True, device_type, None, "env://", timeout)
    if launch.world_size == 1:
        return DistEnv()
    env = DistEnv(launch.rank_of(local_rank), launch.world_size, local_rank, "spawn")
    join_group(env, device_type, launch.init_method, timeout)
    return env


def run_process(local_rank: int, launch: Launch, worker: Worker, args: argparse.Namespace,
                user_errors: tuple[type[Exception], ...]) -> None:
    """Body of every process: join the group, run `worker`, leave the group.

    A lone process lets exceptions propagate (the entry script reports them). A process of a group, or a
    spawned one, prints the error and ends at once: its peers may be blocked in a collective, and the
    launcher (mp.spawn, torchrun, srun) stops them, instead of a collective shutdown that waits for them.
    """
    env = DistEnv()
    try:
        env = _join_group(launch, local_rank, args)
        if env.distributed:
            silence_non_main(env)
        worker(env, launch, args)
    except Exception as error:
        if not (env.distributed or launch.spawn):
            raise
        if isinstance(error, user_errors):
            print(f"error (rank {launch.rank_of(local_rank) if launch.spawn else env.rank}): {error}",
                  file=sys.stderr)
        else:
            traceback.print_exc()
        abort_process(1)
    shutdown_distributed()


def launch_workers(worker: Worker, args: argparse.Namespace, user_errors: tuple[type[Exception], ...]) -> bool:
    """Run `worker` here or in `launch.spawn` spawned processes (they inherit sys.path); False if one failed."""
    launch = plan_launch(args)
    if not launch.spawn:
        run_process(0, launch, worker, args, user_errors)
        return True
    print(f"starting {launch.spawn} processes (world size {launch.world_size}, node rank {launch.node_rank})",
          flush=True)
    try:
        mp.spawn(run_process, args=(launch, worker, args, user_errors), nprocs=launch.spawn, join=True)
    except mp.ProcessExitedException:
        return False
    return True


def run_command(parse: Callable[[list[str] | None], argparse.Namespace], worker: Worker,
                argv: list[str] | None) -> int:
    """An entry script's main: parse the flags, run `worker` in every process; exit status 0 when all
    finished, 1 on a user error (one line, no traceback) or a failed process."""
    try:
        return 0 if launch_workers(worker, parse(argv), USER_ERRORS) else 1
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
