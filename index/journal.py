"""Sequence numbers for acknowledged changes: which ids changed after a point (carry-over, fencing).

Every acknowledged upsert or delete appends its ids to a version's journal in the same commit as the
change (FAISS: a table in changes.sqlite; Milvus: journal.sqlite beside the version's manifest, shared
by replicas through the bundle dir). A job that reads the corpus records the journal's head; at its
activation, every id journaled after that head is looked up in the served version and applied to the
new one, whichever backend holds the vectors.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

JOURNAL_FILE = "journal.sqlite"
JOURNAL_SCHEMA = "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL);"


def record(conn: sqlite3.Connection, ids: list[str]) -> None:
    """Journal `ids` inside the caller's transaction."""
    conn.executemany("INSERT INTO journal (id) VALUES (?)", ((i,) for i in ids))


def head(conn: sqlite3.Connection) -> int:
    """The last sequence number given (0 before any change)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").fetchone()
    return int(row[0]) if row else 0


def changed_since(conn: sqlite3.Connection, seq: int) -> list[str]:
    """Distinct ids journaled after `seq`, in the order they first changed."""
    rows = conn.execute("SELECT id FROM journal WHERE seq > ? ORDER BY seq", (seq,)).fetchall()
    return list(dict.fromkeys(i for (i,) in rows))


class Journal:
    """A journal in a file of its own (backends whose changes are not in a SQLite file of ours)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(JOURNAL_SCHEMA)

    def record(self, ids: list[str]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                record(self._conn, ids)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def head(self) -> int:
        with self._lock:
            return head(self._conn)

    def changed_since(self, seq: int) -> list[str]:
        with self._lock:
            return changed_since(self._conn, seq)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
