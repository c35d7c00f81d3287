"""Files that are not checkpoints end in one line naming the file, whatever their bytes; a real full disk
(a small tmpfs) or file-size limit (`ulimit -f`) while saving ends in one line and keeps the previous
checkpoint intact and loadable."""
from __future__ import annotations

import io
import os
import resource
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint, load_state_strict
from robustness_helpers import CLIP_PY, TINY, data_flags, load, run_in_process, single_error_line


# Where a truncated copy of a good checkpoint ends, as a function of the good file's length.
TRUNCATIONS = {"at-1": lambda n: 1, "at-4": lambda n: 4, "at-30": lambda n: 30, "at-100": lambda n: 100,
               "at-1000": lambda n: 1000, "at-half": lambda n: n // 2, "200-before-end": lambda n: n - 200,
               "1-before-end": lambda n: n - 1}
CASES = ["zero-bytes", "text", "one-newline", "foreign-zip", "a-list", "model-not-a-mapping",
         *[f"truncated-{name}" for name in TRUNCATIONS]]


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_files(reference, tmp_path_factory) -> dict[str, Path]:
    """Files that are not usable checkpoints, by case name."""
    good = (reference / "checkpoint_2.pth").read_bytes()
    foreign_zip = io.BytesIO()
    with zipfile.ZipFile(foreign_zip, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    contents = {"zero-bytes": b"", "text": b"this is not a checkpoint\n", "one-newline": b"\n",
                "foreign-zip": foreign_zip.getvalue(), "a-list": _saved([torch.zeros(2)]),
                "model-not-a-mapping": _saved({"model": 3}),
                **{f"truncated-{name}": good[:end(len(good))] for name, end in TRUNCATIONS.items()}}
    folder = tmp_path_factory.mktemp("bad_checkpoints")
    for name, data in contents.items():
        (folder / f"{name}.pth").write_bytes(data)
    return {name: folder / f"{name}.pth" for name in contents}


@pytest.mark.parametrize("case", CASES)
def test_evaluating_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(shapes, bad_files, case, tmp_path,
                                                                            capsys):
    path = bad_files[case]
    code = run_in_process(f"{data_flags(shapes)} {TINY} --output_dir {tmp_path} --evaluate --checkpoint {path}")
    assert code == 1
    assert str(path) in single_error_line(capsys.readouterr().err)
    assert not (tmp_path / "eval_results.json").exists()


@pytest.mark.parametrize("case", CASES)
def test_loading_a_file_that_is_not_a_checkpoint_raises_checkpoint_error(bad_files, case):
    """Every variant, also for --resume and --checkpoint (they read files through load_checkpoint)."""
    with pytest.raises(CheckpointError, match=str(bad_files[case])) as raised:
        checkpoint = load_checkpoint(bad_files[case], required=("model",))
        load_state_strict(torch.nn.Linear(2, 2), checkpoint["model"], "model", bad_files[case])
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("case", ["zero-bytes", "truncated-at-4", "foreign-zip"])
def test_resuming_from_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(shapes, bad_files, case, tmp_path,
                                                                              capsys):
    path = bad_files[case]
    code = run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {tmp_path} --resume {path}")
    assert code == 1
    assert str(path) in single_error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("*.pth"))


@pytest.fixture
def small_tmpfs(tmp_path, reference):
    """A tmpfs with room for 1.5 checkpoints of the tiny run, or a skip where mounting is not allowed."""
    size = (reference / "checkpoint_2.pth").stat().st_size * 3 // 2
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip() if mounted else 'no mount'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(shapes, small_tmpfs, capsys):
    """A real ENOSPC: torch's zip writer reports it as a RuntimeError, not an OSError."""
    out = small_tmpfs / "run"
    code = run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --save_every_steps 4 --output_dir {out}")
    assert code == 1
    message = single_error_line(capsys.readouterr().err)
    assert message.startswith(f"error: disk full or cannot write checkpoint {out}/checkpoint_1.pth: ")
    assert "unchanged" in message
    last = load(out / "checkpoint_last.pth")                                 # the step-4 checkpoint, intact
    assert last["step"] == 4 and last["mid_epoch"]["iteration"] == 4
    assert not (out / "checkpoint_1.pth").exists() and not list(out.glob(".*.tmp"))
    assert load_checkpoint(out / "checkpoint_last.pth", required=("model",))["model"].keys()


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes get EFBIG
    return apply


def test_file_size_limit_while_saving_is_one_line_and_keeps_the_previous_checkpoint(shapes, reference, tmp_path):
    """`ulimit -f` below a checkpoint's size: every save of the resumed run fails; the checkpoint it resumed
    from stays intact, and resuming it again without the limit works."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(reference / "checkpoint_2.pth", out / "checkpoint_last.pth")
    before = (out / "checkpoint_last.pth").read_bytes()
    args = f"{data_flags(shapes)} {TINY} --epochs 3 --save_every_steps 1 --output_dir {out} --resume"
    done = subprocess.run([sys.executable, str(CLIP_PY), *shlex.split(args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          preexec_fn=_limit_file_size(len(before) // 2))
    assert done.returncode == 1, done.stderr[-3000:]
    message = single_error_line(done.stderr)
    assert message.startswith(f"error: disk full or cannot write checkpoint {out}/checkpoint_last.pth: ")
    assert "Traceback" not in done.stderr
    assert (out / "checkpoint_last.pth").read_bytes() == before and not list(out.glob(".*.tmp"))
    assert load_checkpoint(out / "checkpoint_last.pth", required=("model",))["epoch"] == 2
