"""Linear evaluation of a `train.py` checkpoint: a linear classifier on frozen features, top-1/top-5, JSON result.

Wiring only: flags -> processes -> `unimodal.probe.lincls_worker`. Run `python unimodal_exps/lincls.py --help`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "bimodal_exps")]  # `unimodal` and the shared bimodal packages

from unimodal.launch import run_command  # noqa: E402
from unimodal.options import parse_lincls_args  # noqa: E402
from unimodal.probe import lincls_worker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every process finished, 1 on a user error or a failed process."""
    return run_command(parse_lincls_args, lincls_worker, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
