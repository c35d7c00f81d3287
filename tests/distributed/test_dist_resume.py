"""A 2-rank run SIGKILLed inside an epoch and resumed with --resume ends bit-identical to an uninterrupted
2-rank run: the mid-epoch checkpoint carries every rank's RNG, the sampler position and the loss state."""
from __future__ import annotations

import signal

import torch

from dist_helpers import CRASH_CLIP, TINY, data_flags, load_checkpoint, run_fake_srun

STEPS_PER_EPOCH = 256 // (2 * 16)


def _args(shapes, out) -> list[str]:
    # default (random) training augmentation: a rank restored with another rank's RNG would draw other crops
    return [*data_flags(shapes), *TINY, "--epochs", "2", "--ita_type", "sogclr", "--batch_size_train", "16",
            "--lr_schedule", "step", "--warmup_steps", "4", "--zs_dataset", "none", "--save_every_steps", "4",
            "--keep_checkpoints", "1", "--output_dir", str(out)]


def test_two_ranks_killed_mid_epoch_resume_to_the_same_weights(shapes, tmp_path):
    reference = run_fake_srun(_args(shapes, tmp_path / "reference"), timeout=240)
    assert reference.codes == [0, 0], reference.output[-3000:]

    kill_step = STEPS_PER_EPOCH + 4  # inside the second epoch, right after its mid-epoch checkpoint
    killed = run_fake_srun(_args(shapes, tmp_path / "killed"), timeout=240, script=CRASH_CLIP,
                           CRASH=f"step:{kill_step}")
    assert killed.codes == [-signal.SIGKILL] * 2, killed.output[-3000:]
    last = load_checkpoint(tmp_path / "killed" / "checkpoint_last.pth")
    assert (last["epoch"], last["step"], last["mid_epoch"]["iteration"]) == (1, kill_step, 4)
    assert len(last["mid_epoch"]["rng"]) == 2  # one RNG state per rank

    resumed = run_fake_srun([*_args(shapes, tmp_path / "killed"), "--resume"], timeout=240)
    assert resumed.codes == [0, 0], resumed.output[-3000:]
    a = load_checkpoint(tmp_path / "reference" / "checkpoint_2.pth")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint_2.pth")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 2 * STEPS_PER_EPOCH)
    for part in ("model", "loss"):
        different = [key for key in a[part] if not torch.equal(a[part][key], b[part][key])]
        assert not different, f"{part}: {different[:5]}"
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), f"optimizer {index}.{name}"

