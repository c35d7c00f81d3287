"""A multi-rank run takes its output folder's lock once (rank 0): into a folder in use, every rank stops with
exit 1 and the run prints one line naming the holder (the other distributed tests run through the lock)."""
from __future__ import annotations

import subprocess
import sys

from dist_helpers import REPO, TINY, data_flags, run_fake_srun

HOLD_LOCK = ("import sys; sys.path.insert(0, sys.argv[1]); from engine.runlock import RunLock; "
             "lock = RunLock(sys.argv[2]).acquire(); print('locked', flush=True); sys.stdin.read()")


def _args(shapes, out) -> list[str]:
    return [*data_flags(shapes), *TINY, "--epochs", "1", "--batch_size_train", "32", "--train_frac", "0.25",
            "--zs_dataset", "none", "--output_dir", str(out)]


def test_two_ranks_into_a_folder_in_use_both_stop_with_one_line(shapes, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(REPO / "bimodal_exps"), str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = run_fake_srun(_args(shapes, out), timeout=120)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert done.codes == [1, 1], done.output[-3000:]
    in_use = [line for line in done.output.splitlines() if "is in use by another run" in line]
    assert len(in_use) == 1 and in_use[0].startswith(f"error: --output_dir {out} is in use by another run (host ")
    assert f"pid {holder.pid}" in in_use[0]
    assert "Traceback" not in done.output
    assert sorted(path.name for path in out.iterdir()) == ["run.lock"]

