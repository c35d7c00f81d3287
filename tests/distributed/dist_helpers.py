"""Shared by the distributed tests: tiny-model flags, process launchers (torchrun, fake srun, single)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CLIP = str(REPO / "bimodal_exps" / "clip.py")
INJECT = str(Path(__file__).resolve().parent / "inject_clip.py")
CRASH_CLIP = str(REPO / "tests" / "crash_clip.py")  # clip.py with a CRASH=<place>:<n> SIGKILL
TINY = ["--image_encoder", "test_vit", "--image_res", "32", "--text_encoder", "Transformer", "--text_width", "64",
        "--text_heads", "2", "--text_layers", "2", "--context_length", "32", "--embed_dim", "32", "--workers", "0",
        "--val_workers", "0", "--no-progress"]
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "NGPUS", "DRY_RUN", "INJECT", "CRASH",
                 "TORCHELASTIC_RUN_ID", "GROUP_RANK", "LOCAL_WORLD_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher variables (SLURM_*, torchrun's), one thread per process, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def data_flags(shapes: Path) -> list[str]:
    return ["--data_path", str(shapes / "datasets"), "--ann_path", str(shapes / "clip_train")]


@dataclass
class Finished:
    """Exit statuses, combined output and wall time of a launch."""

    codes: list[int]
    output: str
    seconds: float


def run_single(args: list[str], timeout: float = 120, script: str = CLIP, **env: str) -> Finished:
    start = time.monotonic()
    done = subprocess.run([PYTHON, script, *args], env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return Finished([done.returncode], done.stdout + done.stderr, time.monotonic() - start)


def run_torchrun(args: list[str], nproc: int = 2, timeout: float = 120, script: str = CLIP, **env: str) -> Finished:
    start = time.monotonic()
    command = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone", script, *args]
    done = subprocess.run(command, env=clean_env(**env), capture_output=True, text=True, timeout=timeout, check=False)
    return Finished([done.returncode], done.stdout + done.stderr, time.monotonic() - start)


def run_fake_srun(args: list[str], ntasks: int = 2, timeout: float = 120, script: str = CLIP, **env: str) -> Finished:
    """Start `ntasks` processes with the variables srun gives its tasks (no MASTER_ADDR: from the node list)."""
    start = time.monotonic()
    port = str(free_port())
    procs = [subprocess.Popen([PYTHON, "-u", script, *args],
                              env=clean_env(SLURM_PROCID=str(rank), SLURM_NTASKS=str(ntasks), SLURM_LOCALID=str(rank),
                                            SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", MASTER_PORT=port,
                                            **env),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(ntasks)]
    outputs = []
    try:
        for proc in procs:
            remaining = max(timeout - (time.monotonic() - start), 1.0)
            outputs.append(proc.communicate(timeout=remaining)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Finished([p.returncode for p in procs], "\n".join(outputs), time.monotonic() - start)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
