"""Bad situations end with a one-line error and, where training had started, a usable checkpoint: disk full,
unwritable output folder, non-finite losses, ids outside the loss state, a checkpoint of another
architecture, a file that is not a training checkpoint."""
import errno

import pytest
import torch

import clip
from engine.task import ContrastiveTask
from robustness_helpers import TINY, data_flags, error_lines, load, run_in_process


def one_error_line(capsys) -> str:
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return lines[0]


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(shapes, tmp_path, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def save_until_disk_full(obj, handle, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    code = run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --save_every_steps 4 --output_dir {tmp_path}")
    assert code == 1 and len(calls) == 2
    message = one_error_line(capsys)
    assert "No space left on device" in message and "checkpoint_1.pth" in message and "unchanged" in message
    monkeypatch.setattr(torch, "save", real_save)
    last = load(tmp_path / "checkpoint_last.pth")                           # the step-4 checkpoint, intact
    assert last["step"] == 4 and last["mid_epoch"]["iteration"] == 4
    assert not (tmp_path / "checkpoint_1.pth").exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("relative", ["a_file/out", "a_file"], ids=["parent-is-a-file", "is-a-file"])
def test_unwritable_output_dir_fails_before_training(shapes, tmp_path, relative, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / relative
    assert run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {out}") == 1
    assert one_error_line(capsys).startswith(f"error: --output_dir {out}: cannot write")
    assert not list(tmp_path.glob("**/*.pth"))


class NaNFromThirdStep(ContrastiveTask):
    """The real task, whose loss turns NaN from the third forward pass on."""

    calls = 0

    def forward(self, images, tokens, ids):
        out = super().forward(images, tokens, ids)
        NaNFromThirdStep.calls += 1
        if NaNFromThirdStep.calls >= 3:
            out.loss = out.loss * float("nan")
        return out


def test_consecutive_non_finite_losses_stop_with_a_checkpoint(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(clip, "ContrastiveTask", NaNFromThirdStep)
    NaNFromThirdStep.calls = 0
    code = run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --max_skipped_steps 3 --output_dir {tmp_path}")
    assert code == 1 and NaNFromThirdStep.calls == 5
    message = one_error_line(capsys)
    assert "3 consecutive non-finite" in message and "iteration 4" in message
    assert str(tmp_path / "checkpoint_last.pth") in message
    last = load(tmp_path / "checkpoint_last.pth")
    assert last["epoch"] == 0 and last["mid_epoch"]["iteration"] == 5 and last["step"] == 5
    assert all(torch.isfinite(value).all() for value in last["model"].values() if value.is_floating_point())


def test_ids_outside_the_loss_state_are_one_line(shapes, tmp_path, monkeypatch, capsys):
    real_build_loss = clip.build_loss
    monkeypatch.setattr(clip, "build_loss", lambda ita_type, num_samples, **hparams:
                        real_build_loss(ita_type, num_samples=8, **hparams))
    assert run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {tmp_path}") == 1
    message = one_error_line(capsys)
    assert "out of range for the loss state of size num_samples=8" in message


def test_checkpoint_of_another_architecture_lists_the_mismatched_keys(shapes, reference, tmp_path, capsys):
    code = run_in_process(f"{data_flags(shapes)} {TINY.replace('--embed_dim 32', '--embed_dim 16')} "
                          f"--output_dir {tmp_path} --evaluate --checkpoint {reference}/checkpoint_2.pth")
    assert code == 1
    message = one_error_line(capsys)
    assert f"{reference}/checkpoint_2.pth: the model does not match this architecture" in message
    assert "vision_proj.weight (32, 64) vs (16, 64)" in message and "text_proj.weight" in message


def test_resume_from_a_weights_only_file_is_refused_with_the_missing_keys(shapes, reference, tmp_path, capsys):
    torch.save({"model": load(reference / "checkpoint_2.pth")["model"]}, tmp_path / "weights.pth")
    assert run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {tmp_path}/out "
                          f"--resume {tmp_path}/weights.pth") == 1
    message = one_error_line(capsys)
    assert "weights.pth cannot be resumed from (missing: args, epoch, format_version" in message
    assert "--checkpoint" in message
