"""benchmarks/distributed_loss.py runs at W = 2 and counts the bytes the two recipes send."""
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
    rows = {row["recipe"]: row for row in json.loads(out.read_text())["rows"]}
    b, d, fp32 = 4, 16, 4
    # local rows: gather e and z (to 1 peer, b×d each) and, backward, all_reduce both B×d gradients (gloo;
    # clip keeps no per-sample state to gather); full matrix: the same two gathers plus the int64 ids.
    assert rows["local rows"]["comm_kb_per_rank"] * 1024 == 2 * b * d * fp32 + 2 * (2 * b * d * fp32)
    assert rows["full matrix"]["comm_kb_per_rank"] * 1024 == 2 * b * d * fp32 + b * 8
    assert rows["local rows"]["saved_mb_per_rank"] > 0 and rows["full matrix"]["ms_per_rank"] > 0
    assert "| 8 | clip | local rows |" in capsys.readouterr().out
