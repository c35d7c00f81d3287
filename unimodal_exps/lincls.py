"""Linear evaluation of a `train.py` checkpoint: a linear classifier on frozen features, top-1/top-5, JSON result.

Wiring only: flags -> processes -> `unimodal.probe.lincls_worker`. Run `python unimodal_exps/lincls.py --help`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "bimodal_exps")]  # `unimodal` and the shared bimodal packages

from unimodal.errors import USER_ERRORS  # noqa: E402
from unimodal.launch import launch_workers  # noqa: E402
from unimodal.options import parse_lincls_args  # noqa: E402
from unimodal.probe import lincls_worker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every process finished, 1 on a user error or a failed process."""
    try:
        args = parse_lincls_args(argv)
        return 0 if launch_workers(lincls_worker, args, USER_ERRORS) else 1
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
