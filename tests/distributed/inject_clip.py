"""clip.py with a fault injected on one rank, for the fault and pre-emption tests only.

INJECT="<action>:<rank>:<call>": on rank <rank>, at its <call>-th training forward, `raise` raises a
RuntimeError and `USR1`/`TERM` sends that signal to the process itself (as SLURM would); `KILL` SIGKILLs it
(a power cut after <call> - 1 training steps).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bimodal_exps"))

import clip  # noqa: E402
from engine.task import ContrastiveTask  # noqa: E402

ACTION, RANK, CALL = os.environ["INJECT"].split(":")
_original_forward = ContrastiveTask.forward
_calls = 0


def _forward(self, images, tokens, ids):
    global _calls
    _calls += 1
    if int(os.environ.get("RANK", "0")) == int(RANK) and _calls == int(CALL):
        if ACTION == "raise":
            raise RuntimeError(f"injected failure on rank {RANK}")
        os.kill(os.getpid(), getattr(signal, "SIG" + ACTION))
    return _original_forward(self, images, tokens, ids)


ContrastiveTask.forward = _forward

if __name__ == "__main__":
    sys.exit(clip.main())
