"""A run SIGKILLed at any moment, even while saving, and resumed with --resume ends bit-identical to an
uninterrupted run: from a mid-epoch checkpoint and from an epoch-boundary one (CPU, workers 0)."""
import json
import signal

from robustness_helpers import STEPS_PER_EPOCH, assert_same_training_state, load, run_in_process, run_subprocess


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
