"""One run per output folder: a second run into a folder in use is refused in one line naming the folder and
the holder; a crashed holder's lock is taken over with a note; the lock is released on exit and on
pre-emption; a fresh run into a folder holding another run's checkpoints asks for --resume."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import clip
from engine import runlock
from engine.runlock import LOCK_NAME, RunLock, RunLockError
from robustness_helpers import TINY, data_flags, load, run_in_process, single_error_line

BIMODAL = Path(clip.__file__).parent
HOLD_LOCK = ("import sys; sys.path.insert(0, sys.argv[1]); from engine.runlock import RunLock; "
             "lock = RunLock(sys.argv[2]).acquire(); print('locked', flush=True); sys.stdin.read()")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of `tmp_path/out` until the test ends (or kills it)."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(BIMODAL), str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_second_run_into_a_folder_in_use_is_refused_naming_the_holder(shapes, holder, capsys):
    out, proc = holder
    assert run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {out}") == 1
    message = single_error_line(capsys.readouterr().err)
    assert message.startswith(f"error: --output_dir {out} is in use by another run (host {socket.gethostname()}, "
                              f"pid {proc.pid}, started ")
    assert "choose another --output_dir" in message
    assert sorted(path.name for path in out.iterdir()) == [LOCK_NAME]   # no args.json, log or checkpoint


def test_a_crashed_holder_is_taken_over_with_a_note(holder):
    out, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    lock = RunLock(out).acquire()                     # the kernel dropped the dead holder's flock
    try:
        assert lock.note is not None and f"pid {proc.pid}" in lock.note and "ended without releasing" in lock.note
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert (out / LOCK_NAME).read_text() == ""       # released: the record is cleared, the file stays
    again = RunLock(out).acquire()
    assert again.note is None
    again.release()


def test_the_same_folder_cannot_be_locked_twice_in_one_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()


@pytest.mark.parametrize("record, taken_over", [
    ({"host": socket.gethostname(), "pid": 2**22 + 12345, "started": 0}, True),   # no such pid: stale
    ({"host": socket.gethostname(), "pid": os.getppid(), "started": 0}, False),   # alive
    ({"host": "another-node", "pid": 1, "started": 0}, False),                    # cannot be checked from here
], ids=["same-host-dead", "same-host-alive", "other-host"])
def test_without_file_locks_the_record_decides(tmp_path, monkeypatch, record, taken_over):
    """Filesystems without flock (ENOLCK): only a dead holder on this host is taken over."""
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_flock)
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))
    if taken_over:
        lock = RunLock(tmp_path).acquire()
        assert f"pid {record['pid']}" in lock.note
        lock.release()
    else:
        with pytest.raises(RunLockError, match=f"host {record['host']}, pid {record['pid']}.*delete"):
            RunLock(tmp_path).acquire()


def test_lock_is_released_after_a_run(reference):
    assert (reference / LOCK_NAME).read_text() == ""
    RunLock(reference).acquire().release()


class StopAfterTwoSteps(clip.StopSignal):
    """The real handler, asked as if SIGTERM arrived during the second step."""

    def requested(self) -> int:
        self.asked = getattr(self, "asked", 0) + 1
        return signal.SIGTERM if self.asked >= 2 else 0


def test_lock_is_released_on_preemption_and_the_run_resumes(shapes, tmp_path, monkeypatch, capsys):
    flags = f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {tmp_path}"
    monkeypatch.setattr(clip, "StopSignal", StopAfterTwoSteps)
    assert run_in_process(flags) == 128 + signal.SIGTERM
    assert (tmp_path / LOCK_NAME).read_text() == ""
    assert load(tmp_path / "checkpoint_last.pth")["step"] == 2
    monkeypatch.undo()
    assert run_in_process(f"{flags} --resume") == 0
    assert "taking over" not in capsys.readouterr().out


def test_fresh_run_into_a_folder_with_checkpoints_asks_for_resume(shapes, tmp_path, capsys):
    (tmp_path / "checkpoint_3.pth").write_bytes(b"another run's")
    (tmp_path / "args.json").write_text("{\"theirs\": true}\n")
    assert run_in_process(f"{data_flags(shapes)} {TINY} --epochs 1 --output_dir {tmp_path}") == 1
    message = single_error_line(capsys.readouterr().err)
    assert message == (f"error: --output_dir {tmp_path} already holds another run's checkpoints (checkpoint_3.pth); "
                       f"pass --resume to continue that run, or choose a new --output_dir")
    assert (tmp_path / "args.json").read_text() == "{\"theirs\": true}\n"
    assert (tmp_path / "checkpoint_3.pth").read_bytes() == b"another run's"
    assert (tmp_path / LOCK_NAME).read_text() == ""
