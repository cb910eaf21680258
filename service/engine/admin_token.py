"""The admin token: WHITEVEC_ADMIN_TOKEN when set, else one generated once and kept in the data dir.

The file (mode 0600) is read again whenever it changes on disk, so `whitevec token --rotate` takes
effect on a running server at its next request, without a restart.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from whitevec.models.errors import WhitevecError

TOKEN_FILE = "admin_token"


class AdminToken:
    """The token that opens /admin; `created` says this process wrote the file (a first start)."""

    def __init__(self, configured: str | None, data_dir: Path) -> None:
        self.configured = configured
        self.path = data_dir / TOKEN_FILE
        self.created = False
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime) of the file last read
        self._value: str | None = None

    @property
    def from_settings(self) -> bool:
        return self.configured is not None

    def current(self) -> str:
        """The token now: the setting, else the file's (created on first use)."""
        if self.configured is not None:
            return self.configured
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return self._create()
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            if seen != self._seen or self._value is None:
                value = self._read()
                if value is None and self._value is not None:
                    return self._value  # damaged while serving: keep the last good one
                if value is None:
                    raise WhitevecError(f"{self.path} is empty or unreadable; write a new admin token with "
                                        f"`whitevec token --rotate --data-dir {self.path.parent}`")
                self._seen, self._value = seen, value
            return self._value

    def _read(self) -> str | None:
        try:
            value = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return value if value and value.isprintable() and " " not in value else None

    def stored(self) -> str | None:
        """The token now without creating one: the setting, else the file's (None when there is none)."""
        if self.configured is not None or self.path.exists():
            return self.current()
        return None

    def _written(self, value: str) -> Path:
        """`value` in a new private temp file beside the token file, on disk before it is linked into place."""
        tmp = self.path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _create(self) -> str:
        """A new token, linked into place whole: a racing process or a crash never leaves an empty file."""
        value = secrets.token_urlsafe(24)
        tmp = self._written(value)
        try:
            os.link(tmp, self.path)  # fails if the file exists: then another process's token wins
        except FileExistsError:
            self._seen = None
            stored = self._read()
            if stored is None:
                raise WhitevecError(f"{self.path} is empty or unreadable; write a new admin token with "
                                    f"`whitevec token --rotate --data-dir {self.path.parent}`") from None
            self._value = stored
            return stored
        finally:
            tmp.unlink(missing_ok=True)
        self.created, self._value = True, value
        st = os.stat(self.path)
        self._seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        return value

    def rotate(self) -> str:
        """Replace the stored token (atomically: readers see the old file or the new one)."""
        if self.configured is not None:
            raise WhitevecError("the admin token comes from WHITEVEC_ADMIN_TOKEN: change it there (and restart); "
                                "--rotate replaces only a generated token")
        value = secrets.token_urlsafe(24)
        os.replace(self._written(value), self.path)
        return value
