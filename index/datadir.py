"""The one-process-per-data-dir lock of a server or a CLI build."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from whitevec.models.errors import WhitevecError


#: Who takes a data dir, and what to do instead when it is taken: (what, instead) for `DataDirLock.acquire`.
SERVER = ("a whitevec server", "or send requests to the server already running on it (a second one would not see "
                               "its writes)")
BUILD = ("`whitevec index build`", "or send the build to the running server (POST /admin/index/rebuild)")
TRAIN = ("`whitevec train --activate`", "or send the training to the running server (POST /admin/train)")


class DataDirLocked(WhitevecError):
    """Another whitevec process is using the data dir."""


class DataDirLock:
    """An exclusive flock on data_dir/.lock for the life of a server or a CLI build.

    The kernel drops it when the process dies (kill -9 included), so it never needs cleaning.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, what: str, instead: str) -> None:
        """Hold the data dir as `what`; DataDirLocked names the holder and `instead`, what to do rather than
        start a second process on it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if not holder.startswith(SERVER[0]):  # a build or a training holds it: nothing to send work to
                instead = "or wait for it to finish"
            raise DataDirLocked(
                f"data dir {self.path.parent} is in use by {holder}; stop it first, {instead}, or use another "
                "--data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()})".encode())
        self._fd = fd

    @classmethod
    def check_free(cls, data_dir: Path, what: str, instead: str) -> None:
        """DataDirLocked now, before a command loads anything, when another process holds `data_dir` (the
        command takes the lock for real later; this only answers at once)."""
        if not (Path(data_dir) / ".lock").exists():
            return
        probe = cls(data_dir)
        probe.acquire(what, instead)
        probe.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
