"""unimodal_exps/train.py follows clip.py's policy: a bad flag or an undecodable image ends the run with one line
naming it (checkpoints kept), empty image files are skipped and counted, and --resume refuses a file that is not
a train.py checkpoint with the keys it lacks."""
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from robustness_helpers import fingerprint, load, the_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unimodal"))
from unimodal_helpers import TINY_MODEL, build_one_per_class_folders, load_script  # noqa: E402

train = load_script("train")
LAST = "checkpoint_last.pth.tar"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """36 shapes classes × 1 image of 32 px in train/ and val/."""
    return build_one_per_class_folders(tmp_path_factory.mktemp("unimodal_folders"))


def train_status(data: Path, save_dir: Path, *extra: str) -> int:
    """train.py's exit status for one tiny epoch (argparse's exits returned, not raised)."""
    try:
        return train.main(["--data", str(data), "--data_name", "folder", "--save_dir", str(save_dir), *TINY_MODEL,
                           "--batch-size", "12", "--warmup-epochs", "0", "--epochs", "1", *extra])
    except SystemExit as stop:
        return int(stop.code)


@pytest.fixture(scope="module")
def finished(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unimodal_finished")
    assert train_status(folders, out) == 0
    return out


@pytest.fixture
def previous_run(finished, tmp_path) -> Path:
    """A save folder holding a finished run's checkpoint (hard link), for runs that must not touch it."""
    out = tmp_path / "previous_run"
    out.mkdir()
    os.link(finished / LAST, out / LAST)
    return out


def first_train_image(root: Path) -> Path:
    return sorted((root / "train").glob("*/*"))[0]


@pytest.mark.parametrize("flags, culprit, status", [
    ("--lr nan", "--lr", 2), ("--t 0", "--t", 2), ("--workers -1", "--workers", 2),
    ("--image-size 0", "--image-size", 2), ("--seed -1", "--seed", 2), ("--save-freq 0", "--save-freq", 2),
    ("--momentum 1", "--momentum", 2), ("--num_proj_layers 0", "--num_proj_layers", 2),
    ("--device gpu", "--device 'gpu'", 1), ("--arch no_such_net", "--arch no_such_net", 1),
    ("--arch test_vit --image-size 30", "--image_size 30", 1),  # not a multiple of the ViT patch (16)
], ids=lambda value: value if isinstance(value, str) and value.startswith("--") else None)
def test_a_bad_flag_is_one_line_naming_it(flags, culprit, status, folders, previous_run, capsys):
    before = fingerprint(previous_run)
    code = train_status(folders, previous_run, "--epochs", "2", "--resume", str(previous_run / LAST), *flags.split())
    line = the_error(capsys.readouterr().err)
    assert code == status and culprit in line, line
    assert fingerprint(previous_run) == before


def test_an_undecodable_image_stops_the_run_naming_it_and_keeps_the_checkpoint(folders, previous_run, tmp_path,
                                                                              capsys):
    data = tmp_path / "data"
    shutil.copytree(folders, data)
    broken = first_train_image(data)
    broken.write_bytes(b"not an image")
    before = fingerprint(previous_run)
    code = train_status(data, previous_run, "--epochs", "2", "--resume", str(previous_run / LAST))
    line = the_error(capsys.readouterr().err)
    assert code == 1 and f"cannot load image {broken}" in line
    assert fingerprint(previous_run) == before


def test_empty_image_files_are_skipped_and_counted(folders, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(folders, data)
    empty = first_train_image(data).with_name("empty.png")
    empty.write_bytes(b"")
    assert train_status(data, tmp_path / "out") == 0
    assert f"skipped 1 empty or unreadable image file(s) under {data / 'train'}, e.g. {empty}" in \
        capsys.readouterr().out
    assert load(tmp_path / "out" / LAST)["loss"]["log_u"].shape == (36,)    # the 36 good images


def test_resume_from_a_weights_only_file_names_the_missing_keys(folders, finished, tmp_path, capsys):
    torch.save({"model": load(finished / LAST)["model"]}, tmp_path / "weights.pth")
    code = train_status(folders, tmp_path / "out", "--epochs", "2", "--resume", str(tmp_path / "weights.pth"))
    line = the_error(capsys.readouterr().err)
    assert code == 1 and f"{tmp_path / 'weights.pth'} cannot be resumed from (missing: arch, args, epoch" in line
    assert not list((tmp_path / "out").glob("*.pth.tar"))
