"""Test-only crash points: SIGKILL this process at a chosen place, for the kill-and-resume tests.

Never set in real runs. SIGKILL cannot be caught or cleaned up after, so these reproduce a power cut,
the OOM killer or `scancel --signal=KILL` at a point chosen by count instead of by timing:

* `CLIP_TEST_KILL_AT_STEP=N`: right after global training step N (1-based; counted over all epochs,
  including a resumed run's earlier steps), after any checkpoint due at that step was written;
* `CLIP_TEST_KILL_DURING_SAVE=N`: inside the N-th checkpoint write of this process, once the temporary
  file is complete and before it replaces the target.
"""
from __future__ import annotations

import os
import signal

KILL_AT_STEP = "CLIP_TEST_KILL_AT_STEP"
KILL_DURING_SAVE = "CLIP_TEST_KILL_DURING_SAVE"

_saves_started = 0


def _kill_if(variable: str, count: int) -> None:
    if os.environ.get(variable) == str(count):
        os.kill(os.getpid(), signal.SIGKILL)


def after_step(global_step: int) -> None:
    """Crash point at the end of training step `global_step`."""
    _kill_if(KILL_AT_STEP, global_step)


def during_save() -> None:
    """Crash point between writing a checkpoint's temporary file and renaming it into place."""
    global _saves_started
    _saves_started += 1
    _kill_if(KILL_DURING_SAVE, _saves_started)
