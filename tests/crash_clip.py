"""clip.py that SIGKILLs itself at a chosen place, for the kill-and-resume tests only.

SIGKILL cannot be caught or cleaned up after, so this reproduces a power cut, the OOM killer or
`scancel --signal=KILL` at a point chosen by count instead of by timing. CRASH="<place>:<n>":
* `step:N`: right after global training step N (1-based, counted over all epochs, a resumed run's earlier
  steps included), after any checkpoint due at that step was written;
* `save:N`: inside this process's N-th checkpoint write, once the temporary file is complete and before it
  replaces the target.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bimodal_exps"))

import clip  # noqa: E402
from engine import trainer  # noqa: E402

CHECKPOINT_TEMPORARY = re.compile(r"\.checkpoint_.*\.tmp")  # engine.checkpoint.save_atomic's temporary files


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_after_step(at_step: int) -> None:
    """Wrap the trainer's per-step hook: kill once global step `at_step` is done."""
    original = trainer._after_step

    def after_step(run: trainer.Run, epoch: int, iterations_done: int) -> None:
        original(run, epoch, iterations_done)
        if epoch * run.steps_per_epoch + iterations_done == at_step:
            _kill()

    trainer._after_step = after_step


def _kill_during_save(at_save: int) -> None:
    """Wrap os.replace: kill instead of the `at_save`-th rename of a complete checkpoint temporary file."""
    original, saves = os.replace, 0

    def replace(source, target, **kwargs) -> None:
        nonlocal saves
        name = Path(source).name
        if CHECKPOINT_TEMPORARY.fullmatch(name) and not name.endswith(".link.tmp"):
            saves += 1
            if saves == at_save:
                _kill()
        original(source, target, **kwargs)

    os.replace = replace


if __name__ == "__main__":
    place, count = os.environ["CRASH"].split(":")
    {"step": _kill_after_step, "save": _kill_during_save}[place](int(count))
    sys.exit(clip.main())
