"""One run per output folder: an exclusive lock file in `--output_dir`, held for the run's lifetime.

The lock is an `fcntl.flock` on `<output_dir>/run.lock`, so the kernel releases it when the holder ends,
even by SIGKILL or a crash. The file also records the holder (host, pid, start time) for the message a
refused run prints; a run that takes the lock over a record left by a holder that ended without releasing
it says so. Where the filesystem has no flock (some network filesystems), the record alone decides: a
holder on this host whose pid is gone is stale and taken over; any other record refuses the run.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "run.lock"


class RunLockError(RuntimeError):
    """The output folder is in use by another run; the message names the folder and the holder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {when}"


class RunLock:
    """The lock of one output folder: `acquire()` at start, `release()` at exit (also a context manager)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        self.note: str | None = None  # set when a stale record was taken over

    def _read_holder(self) -> dict:
        try:
            text = os.pread(self._fd, 4096, 0).decode("utf-8", errors="replace")
            holder = json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {"host": "?", "pid": "?"}  # unreadable record: someone wrote it, treat as a holder
        return holder if isinstance(holder, dict) else {"host": "?", "pid": "?"}

    def _refuse(self, holder: dict, hint: str = "") -> RunLockError:
        return RunLockError(f"--output_dir {self.directory} is in use by another run ({_describe(holder)}; lock file "
                            f"{self.path}){hint}; wait for it to end or choose another --output_dir")

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockError naming the folder and the holder."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                raise self._refuse(self._read_holder()) from None
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                locked = False  # no flock on this filesystem: the record decides
            holder = self._read_holder()
            if holder:
                same_host = holder.get("host") == socket.gethostname()
                if not locked and not (same_host and isinstance(holder.get("pid"), int)
                                       and not _pid_alive(holder["pid"])):
                    raise self._refuse(holder, f" (this filesystem has no file locks: if that run is gone, "
                                               f"delete {self.path})")
                self.note = (f"{self.path}: taking over the lock of a run that ended without releasing it "
                             f"({_describe(holder)})")
            record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, record.encode("utf-8") + b"\n", 0)
            os.fsync(self._fd)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        return self

    def release(self) -> None:
        """Clear the record and drop the lock (idempotent). The file stays: deleting it would let two runs
        lock two different files of the same name."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # explicit: forked DataLoader workers may still hold the fd
        except OSError:
            pass  # no flock on this filesystem; the cleared record is the release
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
