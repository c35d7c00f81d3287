"""SIGTERM/SIGUSR1: checkpoint_last.pth at the next step boundary on every rank, exit 128+N, optional requeue."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap

from dist_helpers import INJECT, PYTHON, REPO, TINY, clean_env, data_flags, load_checkpoint, run_fake_srun
from engine.preemption import Preempted, StopSignal, requeue_slurm_job


def _fake_scontrol(tmp_path) -> tuple[str, os.PathLike]:
    """A directory with an `scontrol` that records its arguments, and the record file."""
    bin_dir, record = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> "{record}"\n')
    (bin_dir / "scontrol").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}", record


def test_signal_is_recorded_not_fatal_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopSignal().install()
    try:
        assert stop.requested() == 0
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested() == signal.SIGUSR1
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_second_signal_ends_the_process_at_once():
    code = textwrap.dedent("""
        import os, signal, sys, time
        sys.path.insert(0, "bimodal_exps")
        from engine.preemption import StopSignal
        stop = StopSignal().install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        print("first signal recorded:", stop.requested(), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        print("still alive")
    """)
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == -signal.SIGTERM
    assert f"first signal recorded: {int(signal.SIGTERM)}" in done.stdout and "still alive" not in done.stdout


def test_exit_code_and_message():
    stop = Preempted(signal.SIGUSR1, epoch=2, iteration=7)
    assert stop.exit_code == 128 + signal.SIGUSR1
    assert "SIGUSR1" in str(stop) and "epoch 2, iteration 7" in str(stop)


def test_requeue_calls_scontrol_with_the_job_id(tmp_path):
    path, record = _fake_scontrol(tmp_path)
    assert requeue_slurm_job({"SLURM_JOB_ID": "77", "PATH": path}) == "job 77 requeued"
    assert record.read_text().split() == ["requeue", "77"]


def test_requeue_outside_slurm_says_so(tmp_path):
    path, record = _fake_scontrol(tmp_path)
    assert "not a Slurm job" in requeue_slurm_job({"PATH": path})
    assert not record.exists()


def test_signal_on_one_rank_stops_both_after_the_same_step(shapes, tmp_path):
    """Rank 1 alone gets SIGUSR1 during step 2: both ranks stop before step 3, rank 0 writes
    checkpoint_last.pth (3 steps done, loss state included), both exit 138 and the job is requeued."""
    path, record = _fake_scontrol(tmp_path)
    out = tmp_path / "run"
    args = [*data_flags(shapes), *TINY, "--epochs", "1", "--batch_size_train", "16", "--ita_type", "sogclr",
            "--zs_dataset", "none", "--output_dir", str(out), "--requeue_on_preempt"]
    done = run_fake_srun(args, script=INJECT, timeout=300, INJECT="USR1:1:3", PATH=path)
    assert done.codes == [128 + signal.SIGUSR1] * 2, done.output[-3000:]
    checkpoint = load_checkpoint(out / "checkpoint_last.pth")
    assert (checkpoint["epoch"], checkpoint["step"]) == (0, 3)
    assert checkpoint["loss"]["log_u_img"].isfinite().sum() == 3 * 2 * 16  # state of 3 global batches of 32
    assert not (out / "checkpoint_1.pth").exists() and "val_r_mean" not in done.output
    assert record.read_text().split() == ["requeue", "4242"]
    assert "stopped by SIGUSR1 at epoch 0, iteration 3" in done.output
