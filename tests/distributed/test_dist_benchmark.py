"""benchmarks/distributed_loss.py runs at W = 2 and counts the bytes the recipes (and dist_modes) send."""
from __future__ import annotations

import json
import sys

from dist_helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import distributed_loss  # noqa: E402


def test_benchmark_rows_and_communication_counts(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert distributed_loss.main(["--batch-sizes", "8", "--losses", "clip", "--dim", "16", "--repeats", "1",
                                  "--out", str(out)]) == 0
    rows = {(row["recipe"], row["dist_mode"]): row for row in json.loads(out.read_text())["rows"]}
    autograd, fastclip, full = rows["local rows", "autograd"], rows["local rows", "fastclip"], rows["full matrix", "n/a"]
    b, d, fp32 = 4, 16, 4
    # autograd: gather e and z (to 1 peer, b×d each) and, backward, all_reduce both B×d gradients (gloo;
    # clip keeps no per-sample state to gather); fastclip: the same gathers plus (ℓ, τ, coef) of the b
    # anchors of both directions, nothing in the backward; full matrix: the two gathers plus the int64 ids.
    assert autograd["comm_kb_per_rank"] * 1024 == 2 * b * d * fp32 + 2 * (2 * b * d * fp32)
    assert autograd["comm_bwd_kb_per_rank"] * 1024 == 2 * (2 * b * d * fp32)
    assert fastclip["comm_kb_per_rank"] * 1024 == 2 * b * d * fp32 + 2 * 3 * b * fp32
    assert fastclip["comm_bwd_kb_per_rank"] == 0
    assert full["comm_kb_per_rank"] * 1024 == 2 * b * d * fp32 + b * 8
    assert autograd["saved_mb_per_rank"] > 0 and full["ms_per_rank"] > 0
    assert "| 8 | clip | local rows | fastclip |" in capsys.readouterr().out
