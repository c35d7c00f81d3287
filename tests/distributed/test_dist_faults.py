"""An exception on one rank ends every rank with a non-zero status (no hang): judged by exit codes and messages, with
timeouts generous enough for a loaded machine (a hang runs into them and fails the test)."""
from __future__ import annotations

from dist_helpers import INJECT, TINY, data_flags, run_fake_srun, run_single, run_torchrun

HANG_TIMEOUT_S = 300  # far above a normal run; only a hang reaches it


def _args(shapes, out) -> list[str]:
    return [*data_flags(shapes), *TINY, "--epochs", "1", "--batch_size_train", "16", "--ita_type", "clip",
            "--zs_dataset", "none", "--output_dir", str(out)]


def test_rank_failure_under_torchrun(shapes, tmp_path):
    done = run_torchrun(_args(shapes, tmp_path), script=INJECT, timeout=HANG_TIMEOUT_S, INJECT="raise:1:2")
    assert done.codes[0] != 0
    assert "injected failure on rank 1" in done.output
    assert not (tmp_path / "checkpoint_1.pth").exists()


def test_rank_failure_under_srun_ends_the_other_rank_by_itself(shapes, tmp_path):
    """No launcher kills the survivor here (as with srun without -K): rank 1 exits at once instead of waiting
    in collectives, and rank 0 fails at its next collective."""
    done = run_fake_srun(_args(shapes, tmp_path), script=INJECT, timeout=HANG_TIMEOUT_S, INJECT="raise:1:2")
    assert done.codes == [1, 1], done.output[-3000:]
    assert "injected failure on rank 1" in done.output and "rank 0: unhandled RuntimeError" in done.output


def test_single_process_failure_keeps_the_traceback(shapes, tmp_path):
    done = run_single(_args(shapes, tmp_path), script=INJECT, INJECT="raise:0:1")
    assert done.codes == [1] and "RuntimeError: injected failure on rank 0" in done.output


def test_launcher_mismatch_is_a_clean_error_on_every_rank(shapes, tmp_path):
    done = run_fake_srun([*_args(shapes, tmp_path), "--world_size", "3"], timeout=HANG_TIMEOUT_S)
    assert done.codes == [1, 1] and done.output.count("error: --world_size 3 disagrees") == 2
