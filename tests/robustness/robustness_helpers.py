"""Shared pieces of the robustness tests: the tiny preset, in-process and subprocess runs of clip.py, and
state comparison (a uniquely named module, so that test files never import `conftest`)."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import clip

# 6 steps per epoch on 96 pairs; the per-step schedule makes a wrong learning rate after a resume visible,
# sogclr has per-sample state, the default augmenting transform makes a wrong RNG state visible.
TINY = ("--image_encoder test_vit --image_res 32 --text_encoder Transformer --text_width 64 --text_heads 2 "
        "--text_layers 2 --context_length 32 --embed_dim 32 --workers 0 --val_workers 0 --no-progress "
        "--zs_dataset none --batch_size_train 16 --ita_type sogclr --lr_schedule step --warmup_steps 4")
STEPS_PER_EPOCH = 6
CLIP_PY = Path(clip.__file__)
CRASH_CLIP = Path(__file__).resolve().parents[1] / "crash_clip.py"  # clip.py with a CRASH=<place>:<n> kill


def data_flags(root: Path) -> str:
    return f"--data_path {root}/datasets --ann_path {root}/clip_train"


def run_in_process(args: str) -> int:
    """clip.py's main in this process (cheap: no interpreter start-up and imports)."""
    return clip.main(shlex.split(args))


def run_subprocess(args: str, crash: str | None = None) -> subprocess.CompletedProcess:
    """clip.py as its own process, so that it can be SIGKILLed; `crash` ("step:N", "save:N") kills it there."""
    script, env = (CRASH_CLIP, {**os.environ, "CRASH": crash}) if crash else (CLIP_PY, os.environ)
    return subprocess.run([sys.executable, str(script), *shlex.split(args)], capture_output=True, text=True,
                          env=env, timeout=300)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(expected: Path, actual: Path) -> None:
    """Model weights, loss state and optimiser state are bit-identical, and so is the position."""
    a, b = load(expected), load(actual)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        different = [key for key in a[part] if not torch.equal(a[part][key], b[part][key])]
        assert not different, f"{part}: {different[:5]}"
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}.{name}"


def error_lines(stderr: str) -> list[str]:
    """The lines clip.py printed as its error (library warnings filtered out)."""
    return [line for line in stderr.strip().splitlines() if line.startswith("error:")]


def single_error_line(stderr: str) -> str:
    """clip.py's error line, asserting there is exactly one (a user's mistake never ends in more)."""
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]
