"""A wrong flag value ends clip.py with one line naming the flag, never a traceback, and leaves the checkpoints of
the output folder as they were: out-of-range numbers (argparse, exit 2), unknown names and inconsistent
combinations (exit 1 before anything is built), and values only the towers, loss, optimiser or memory reject
(exit 1 when they are built)."""
import argparse

import pytest

from cli.parser import COMPATIBILITY_FLAGS, build_parser
from cli.ranges import Range
from robustness_helpers import TINY, data_flags, exit_status, fingerprint, run_subprocess, the_error

OUT_OF_RANGE = [  # (flags, culprit): refused by argparse
    ("--lr -1", "--lr"), ("--lr nan", "--lr"), ("--lr inf", "--lr"), ("--workers -1", "--workers"),
    ("--temp 0", "--temp"), ("--sogclr_gamma 0", "--sogclr_gamma"), ("--sogclr_gamma 1.5", "--sogclr_gamma"),
    ("--save_freq 0", "--save_freq"), ("--epochs 0", "--epochs"), ("--epochs 2.5", "--epochs"),
    ("--batch_size_train 0", "--batch_size_train"), ("--train_frac 0", "--train_frac"),
    ("--train_frac 1.5", "--train_frac"), ("--data_size 0", "--data_size"), ("--image_res 0", "--image_res"),
    ("--max_words 0", "--max_words"), ("--momentum 1", "--momentum"), ("--weight_decay -0.1", "--weight_decay"),
    ("--ita_type isogclr --tau_min 0", "--tau_min"), ("--ita_type isogclr_tempnet --tempnet_dropout 1",
                                                      "--tempnet_dropout"),
    ("--seed -1", "--seed"), ("--dist_timeout 0", "--dist_timeout"), ("--eval_freq -1", "--eval_freq"),
    ("--keep_checkpoints -1", "--keep_checkpoints"), ("--text_heads 0", "--text_heads"),
    ("--warmup_steps -1", "--warmup_steps"), ("--max_skipped_steps 0", "--max_skipped_steps"),
    ("--grad_clip -1", "--grad_clip"), ("--ita_type fastclip_v2 --tau_eps 0", "--tau_eps"),
]
BEFORE_BUILDING = [  # refused after parsing, before any data or model is built
    ("--opt foo", "--opt foo"), ("--image_encoder no_such_net", "--image_encoder"),
    ("--text_heads 3", "--text_heads 3"), ("--device gpu", "--device 'gpu'"), ("--device cuda:7", "--device cuda:7"),
]
WHEN_BUILT = [  # refused by the towers, the loss or the memory check, named by clip.py's wiring
    ("--image_res 30", "--image_res 30"), ("--image_kwargs '{\"no_such_kwarg\": 1}'", "--image_kwargs"),
    ("--text_max_len 40", "--text_max_len 40"),
    ("--ita_type isogclr --tau_min 0.1 --tau_max 0.05", "--tau_min 0.1"),
    ("--data_size 1000000000000000", "--data_size 1000000000000000"),
    ("--train_frac 0.001", "--train_frac 0.001"), ("--train_frac 0.1", "--train_frac 0.1"),
]
CASES = ([pytest.param(flags, culprit, 2, id=flags) for flags, culprit in OUT_OF_RANGE]
         + [pytest.param(flags, culprit, 1, id=flags) for flags, culprit in BEFORE_BUILDING + WHEN_BUILT])


@pytest.mark.parametrize("flags, culprit, status", CASES)
def test_a_bad_flag_is_one_line_naming_it_and_keeps_the_checkpoint(flags, culprit, status, shapes, previous_run,
                                                                  capsys):
    before = fingerprint(previous_run)
    code = exit_status(f"{data_flags(shapes)} {TINY} --epochs 3 --output_dir {previous_run} --resume {flags}")
    line = the_error(capsys.readouterr().err)
    assert code == status and culprit in line, line
    assert fingerprint(previous_run) == before


@pytest.mark.parametrize("text, reason", [
    ("lr: -1\n", "--lr must be > 0 (got -1)"), ("epochs: 2.5\n", "--epochs must be an integer >= 1 (got 2.5)"),
    ("lr: " + "[" * 600 + "]" * 600 + "\n", "nested too deeply to parse"),  # > 1000 parser frames
], ids=["out-of-range", "not-an-integer", "deeply-nested"])
def test_a_bad_config_file_names_the_file_and_the_flag(text, reason, shapes, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code = exit_status(f"{data_flags(shapes)} {TINY} --config {config} --output_dir {tmp_path}/out")
    line = the_error(capsys.readouterr().err)
    assert code == 1 and f"--config {config}: {reason}" in line
    assert not (tmp_path / "out").exists()


def test_a_real_process_prints_no_traceback(shapes, tmp_path):
    done = run_subprocess(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {tmp_path} --image_res 30")
    assert done.returncode == 1 and "--image_res 30" in the_error(done.stderr)
    assert not list(tmp_path.glob("*.pth"))


def test_every_numeric_flag_has_a_range():
    """New numeric flags must say their range (compatibility flags have no effect and are exempt)."""
    unranged = [action.option_strings[0] for action in build_parser()._actions
                if action.type in (int, float) and action.dest not in COMPATIBILITY_FLAGS
                and action.dest != "cooldown_epochs"]
    assert not unranged


def test_range_checks_values_from_config_files_like_the_command_line():
    checker = Range(int, "[1, inf)")
    assert checker("3") == 3 and checker.problem(3) is None
    assert checker.problem(2.5) == "must be an integer >= 1 (got 2.5)" and checker.problem(True)
    assert Range(float, "(0, 1]").problem(float("nan")) == "must be a finite number in (0, 1] (got nan)"
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be in \(0, 1\] \(got 0.0\)"):
        Range(float, "(0, 1]")("0")
