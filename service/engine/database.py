"""One SQLite file, or a Postgres URL that replicas on different machines share: the connection, its
transactions, and how a damaged SQLite file is refused or moved aside. Job records and access keys live
in one."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from whitevec.models.errors import WhitevecError


class JobsUnavailable(WhitevecError):
    """The job records database (Postgres) cannot be reached right now."""


POSTGRES = re.compile(r"^postgres(ql)?://")

Execute = Callable[..., list[tuple]]


class Database:
    """A SQLite file, or Postgres (a postgresql:// URL, through psycopg) that replicas on different
    machines share. One connection; `transaction()` serialises its use."""

    def __init__(self, target: str | Path) -> None:
        self.postgres = isinstance(target, str) and bool(POSTGRES.match(target))
        self._target = target
        self._lock = threading.Lock()
        self._conn = self._connect()

    @property
    def real(self) -> str:
        """The column type for seconds (Postgres REAL is 4 bytes: seconds would round)."""
        return "DOUBLE PRECISION" if self.postgres else "REAL"

    def _connect(self):
        if not self.postgres:
            return sqlite3.connect(self._target, check_same_thread=False, timeout=30)
        try:
            import psycopg
        except ImportError as exc:
            raise WhitevecError("WHITEVEC_JOBS_DB is a Postgres URL: pip install 'whitevec[postgres]'") from exc
        try:
            return psycopg.connect(self._target, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:  # the message names host and database, never the password
            raise JobsUnavailable(f"WHITEVEC_JOBS_DB: cannot connect to Postgres: {str(exc).strip()}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Execute]:
        """One transaction; yields execute(sql, params=()) -> rows, with `?` placeholders on both."""
        with self._lock:
            if not self.postgres:
                with self._conn:
                    yield lambda sql, params=(): self._conn.execute(sql, params).fetchall()
                return
            import psycopg

            if self._conn.closed:  # Postgres restarted or the network dropped: connect again
                self._conn = self._connect()

            def execute(sql: str, params: tuple = ()) -> list[tuple]:
                cur = self._conn.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []

            try:
                with self._conn.transaction():
                    yield execute
            except psycopg.OperationalError as exc:  # the next call connects again
                raise JobsUnavailable(f"WHITEVEC_JOBS_DB: lost the Postgres connection ({str(exc).strip()}); "
                                      "retry when it is back") from exc


def check_sqlite(path: Path, what: str, fix: str) -> None:
    """Refuse a damaged SQLite file by name, with what to do (never a raw traceback at start)."""
    if not Path(path).is_file():
        return
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        check = str(exc)
    if check != "ok":
        raise WhitevecError(f"{path} ({what}) is damaged: {check}; {fix}")


def quarantine_damaged(path: Path) -> Path | None:
    """A damaged SQLite file moved aside with its -wal and -shm (kept for inspection, never deleted); the
    new name, or None when the file is sound or absent."""
    try:
        check_sqlite(path, "", "")
    except WhitevecError:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = Path(path).with_name(f"{Path(path).name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(f"{moved}{suffix}")
        return moved
    return None
