"""A run SIGKILLed at any moment, even while saving, and resumed with --resume ends bit-identical to an
uninterrupted run: from a mid-epoch checkpoint and from an epoch-boundary one, with DataLoader workers too
(the default --workers, 1 and 2 all reproduce the workers-0 reference: augmentations are seeded per sample)."""
import json
import signal

import pytest

from robustness_helpers import STEPS_PER_EPOCH, assert_same_training_state, load, run_in_process, run_subprocess

def with_workers(common: str, workers: int | None) -> str:
    """The common flags with `--workers N` instead of 0 (None: the default)."""
    return common.replace("--workers 0", "" if workers is None else f"--workers {workers}")


def test_reference_run_keeps_one_numbered_checkpoint(reference):
    names = sorted(path.name for path in reference.iterdir() if path.suffix == ".pth")
    assert names == ["checkpoint_2.pth", "checkpoint_last.pth"]           # --keep_checkpoints 1
    assert (reference / "checkpoint_2.pth").samefile(reference / "checkpoint_last.pth")
    assert "mid_epoch" not in load(reference / "checkpoint_2.pth")


def test_killed_mid_epoch_resumes_to_the_same_weights(common, reference, tmp_path):
    killed = run_subprocess(f"{common} --output_dir {tmp_path}", crash="step:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = load(tmp_path / "checkpoint_last.pth")
    assert last["epoch"] == 0 and last["step"] == 4                         # --save_every_steps 4
    assert last["mid_epoch"]["iteration"] == 4 and len(last["mid_epoch"]["rng"]) == 1

    assert run_in_process(f"{common} --output_dir {tmp_path} --resume") == 0
    assert_same_training_state(reference / "checkpoint_2.pth", tmp_path / "checkpoint_2.pth")
    records = [json.loads(line) for line in (tmp_path / "log.txt").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[1]["train_loss"] == expected[1]["train_loss"]             # the full epoch after the resume
    assert records[1]["val_r_mean"] == expected[1]["val_r_mean"]


def test_killed_while_saving_resumes_from_the_previous_checkpoint(common, reference, tmp_path):
    # writes: step 4 (mid-epoch), epoch 1 (checkpoint_1.pth, linked as last), step 8 <- killed inside this one
    killed = run_subprocess(f"{common} --output_dir {tmp_path}", crash="save:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(tmp_path.glob(".checkpoint_last.pth.*.tmp")), "the kill should leave a partial temporary file"
    last = load(tmp_path / "checkpoint_last.pth")
    assert last["epoch"] == 1 and last["step"] == STEPS_PER_EPOCH and "mid_epoch" not in last
    assert (tmp_path / "checkpoint_last.pth").samefile(tmp_path / "checkpoint_1.pth")

    assert run_in_process(f"{common} --output_dir {tmp_path} --resume") == 0
    assert not list(tmp_path.glob(".checkpoint_*.tmp"))
    assert_same_training_state(reference / "checkpoint_2.pth", tmp_path / "checkpoint_2.pth")
    assert not (tmp_path / "checkpoint_1.pth").exists()                      # pruned by --keep_checkpoints 1


@pytest.mark.parametrize("killed_workers, resumed_workers, step, position", [
    (None, None, 5, (0, 4)),   # the default --workers; killed after step 5, resumed from the step-4 checkpoint
    (2, 1, 6, (1, 0)),         # killed after step 6, resumed from the end of epoch 0 (checkpoint_1.pth)
])
def test_killed_with_workers_resumes_to_the_weights_of_workers_0(common, reference, tmp_path, killed_workers,
                                                                 resumed_workers, step, position):
    killed = run_subprocess(f"{with_workers(common, killed_workers)} --output_dir {tmp_path}", crash=f"step:{step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = load(tmp_path / "checkpoint_last.pth")
    assert (last["epoch"], last.get("mid_epoch", {}).get("iteration", 0)) == position

    assert run_in_process(f"{with_workers(common, resumed_workers)} --output_dir {tmp_path} --resume") == 0
    assert_same_training_state(reference / "checkpoint_2.pth", tmp_path / "checkpoint_2.pth")
