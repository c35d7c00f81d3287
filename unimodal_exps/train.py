"""Self-supervised pre-training with SogCLR (`--loss_type dcl`) or SimCLR (`--loss_type simclr`).

Wiring only: flags -> processes -> `unimodal.pretrain.pretrain_worker`. Run `python unimodal_exps/train.py --help`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent / "bimodal_exps")]  # `unimodal` and the shared bimodal packages

from unimodal.launch import run_command  # noqa: E402
from unimodal.options import parse_train_args  # noqa: E402
from unimodal.pretrain import pretrain_worker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every process finished, 1 on a user error or a failed process."""
    return run_command(parse_train_args, pretrain_worker, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
