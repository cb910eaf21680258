"""Upserts and deletes to a built version: a durable change log plus the in-memory view searches read.

A version's built parts (index.faiss, docs.sqlite, raw.npy) never change after commit; the changes
since go to `changes.sqlite` beside them: the base rows that are gone (deleted, or replaced by an
upsert) and every added document with its raw pooled vector. A change is committed there (SQLite
WAL, synchronous=FULL) before it is acknowledged, so it survives kill -9, and a restart replays the
log into the same view. Each change costs O(change) on disk and O(delta) in memory, never O(corpus);
past a size the service folds the log into a new version (compaction, see Runtime.change_documents).

Added documents get keys from `base_count` upwards, one per upsert, never reused: a key always names
the same text, so a search that read an older view still fetches the right documents.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whitevec.models.errors import WhitevecError
from whitevec.models.files import write_json_atomic

from .journal import JOURNAL_SCHEMA, changed_since, head, record
from . import filters
from .filters import Filter
from .store import Document, select_in

log = logging.getLogger(__name__)

CHANGES_FILE = "changes.sqlite"
#: The journal head of the last acknowledged change, written after each commit: a log that replays to
#: less (its -wal deleted, truncated, bytes flipped) lost acknowledged changes and is refused.
HEAD_FILE = "changes.head"
#: Written once, at a version's first change, and named unlike the change files: a version whose
#: head is lost with its log (every changes.* file deleted) is still known to have had changes.
CHANGED_FILE = "CHANGED"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gone (row INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS added (key INTEGER PRIMARY KEY, id TEXT NOT NULL, text TEXT NOT NULL,
                                  metadata TEXT NOT NULL, raw BLOB NOT NULL, live INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS added_id ON added(id) WHERE live = 1;
""" + JOURNAL_SCHEMA


@dataclass(frozen=True)
class Delta:
    """One consistent view of the changes: swapped whole, never modified (readers hold their own)."""

    gone: np.ndarray  # bool per base row: deleted or replaced
    keys: np.ndarray  # int64 keys of the live added documents
    vectors: np.ndarray  # their served vectors (whitened, unit length), row i for keys[i]
    n_gone: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_gone", int(self.gone.sum()))

    def alive_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.gone)

    def changed(self, rows: np.ndarray, dropped: np.ndarray, keys: np.ndarray, vectors: np.ndarray) -> "Delta":
        gone = self.gone.copy()
        gone[rows] = True
        keep = ~np.isin(self.keys, dropped)
        return Delta(gone, np.concatenate([self.keys[keep], keys]),
                     np.concatenate([self.vectors[keep], vectors.astype(np.float32)]))


class ChangeLogUnwritable(WhitevecError):
    """The change log cannot take a write (a read-only file or folder, a full disk): nothing was changed."""


class ChangeLog:
    """changes.sqlite of one version; created by the first change. One writer (the caller serialises
    changes), any number of readers."""

    def __init__(self, path: Path, base_count: int, dim: int) -> None:
        self.path, self.base_count, self.dim = path, base_count, dim
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._types: dict[str, set[str]] | None = None  # metadata key → JSON types, kept up to date once read
        self.head_path = path.with_name(HEAD_FILE)
        self.changed_path = path.with_name(CHANGED_FILE)
        acked = self._acknowledged()
        if path.is_file():
            self._verify(acked)
            self._open()
        elif acked:
            raise sqlite3.DatabaseError(f"it is missing, but {HEAD_FILE} says {acked} changes were acknowledged")

    def _verify(self, acked: int) -> None:
        """Check the log before anything writes to it: a read-only connection never checkpoints, so a log
        refused here (its -wal damaged or cut short) is left byte for byte as found, for recovery."""
        made = [p for p in (self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm"))
                if not p.exists()]
        try:
            with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise sqlite3.DatabaseError(check)
                has_journal = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
                replayed = head(conn) if has_journal else 0
            if replayed < acked:
                raise sqlite3.DatabaseError(f"it replays {replayed} of the {acked} acknowledged changes (damaged, "
                                            "truncated, or its -wal file lost)")
        except sqlite3.Error:
            for path in made:  # the read-only open made them; the files found stay as they were
                path.unlink(missing_ok=True)
            raise

    def _acknowledged(self) -> int:
        """The journal head the last acknowledged change reached (0 when none was, or before heads)."""
        try:
            return int(json.loads(self.head_path.read_text(encoding="utf-8"))["seq"])
        except FileNotFoundError:
            if self.changed_path.exists():
                raise sqlite3.DatabaseError(f"{HEAD_FILE} is missing, but {CHANGED_FILE} says changes were "
                                            "acknowledged to this version") from None
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise sqlite3.DatabaseError(f"{HEAD_FILE} is unreadable ({exc})") from exc

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a committed change survives power loss
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def load(self, transform: Callable[[np.ndarray], np.ndarray], out_dim: int) -> Delta:
        """The view after every logged change (at start, or when a version is activated)."""
        gone = np.zeros(self.base_count, dtype=bool)
        if self._conn is None:
            return Delta(gone, np.zeros(0, np.int64), np.zeros((0, out_dim), np.float32))
        with self._lock:
            rows = [r for (r,) in self._conn.execute("SELECT row FROM gone")]
            added = self._conn.execute("SELECT key, raw FROM added WHERE live = 1 ORDER BY key").fetchall()
        gone[rows] = True
        keys = np.fromiter((k for k, _ in added), np.int64, len(added))
        raw = self._raw([b for _, b in added])
        vectors = transform(raw) if len(raw) else np.zeros((0, out_dim), np.float32)
        return Delta(gone, keys, np.asarray(vectors, np.float32))

    def _raw(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), np.float32)
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), self.dim)

    def live_keys(self, ids: list[str]) -> dict[str, int]:
        if self._conn is None:
            return {}
        return dict(select_in(self._conn, self._lock, "SELECT id, key FROM added WHERE live = 1 AND id IN ({marks})", ids))

    def apply(self, upserts: list[Document], raw: np.ndarray, gone_rows: list[int], dropped_keys: list[int],
              journal: list[str]) -> np.ndarray:
        """Commit one change (one transaction, durable on return), journaling the ids in `journal`;
        the keys given to `upserts`."""
        try:
            return self._apply(upserts, raw, gone_rows, dropped_keys, journal)
        except sqlite3.OperationalError as exc:  # read-only, disk full, I/O error: the caller's change is not made
            where = f"versions/{self.path.parent.name}/{self.path.name}"
            raise ChangeLogUnwritable(f"{where} cannot be written ({exc}); nothing was changed: give the server's "
                                      "user write access to the data dir (and room on its disk), then retry") from exc

    def _apply(self, upserts: list[Document], raw: np.ndarray, gone_rows: list[int], dropped_keys: list[int],
               journal: list[str]) -> np.ndarray:
        conn = self._open()
        with self._lock:
            start = conn.execute("SELECT MAX(key) FROM added").fetchone()[0]
            first = self.base_count if start is None else start + 1
            keys = np.arange(first, first + len(upserts), dtype=np.int64)
            raw = np.ascontiguousarray(raw, dtype=np.float32)
            if not self.changed_path.exists():  # before the first commit: a failure here changes nothing
                try:  # a head first, so a crash before the commit leaves head and log agreeing (no change)
                    if not self.head_path.exists():
                        write_json_atomic(self.head_path, {"seq": head(conn)})
                    write_json_atomic(self.changed_path, {"first_change_at": time.time()})
                except OSError as exc:
                    raise sqlite3.OperationalError(f"{CHANGED_FILE}: {exc.strerror or exc}") from exc
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO gone VALUES (?)", ((int(r),) for r in gone_rows))
                conn.executemany("UPDATE added SET live = 0 WHERE key = ?", ((int(k),) for k in dropped_keys))
                conn.executemany("INSERT INTO added VALUES (?, ?, ?, ?, ?, 1)", (
                    (int(k), d.id, d.text, json.dumps(d.metadata, ensure_ascii=False), raw[i].tobytes())
                    for i, (k, d) in enumerate(zip(keys, upserts))))
                record(conn, journal)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:  # the change is committed and durable: a head that cannot be written is logged, not raised
                write_json_atomic(self.head_path, {"seq": head(conn)})
            except OSError as exc:
                log.error("%s: %s not updated (%s); the change itself is committed", self.path, HEAD_FILE, exc)
            for d in upserts if self._types is not None else ():
                filters.add_types(self._types, d.metadata)
        return keys

    def head(self) -> int:
        if self._conn is None:
            return 0
        with self._lock:
            return head(self._conn)

    def changed_since(self, seq: int) -> list[str]:
        if self._conn is None:
            return []
        with self._lock:
            return changed_since(self._conn, seq)

    def get(self, keys: list[int]) -> dict[int, Document]:
        if self._conn is None:
            return {}
        found = select_in(self._conn, self._lock, "SELECT key, id, text, metadata FROM added WHERE key IN ({marks})", keys)
        return {k: Document(i, t, json.loads(m)) for k, i, t, m in found}

    def by_id(self, doc_id: str) -> Document | None:
        key = self.live_keys([doc_id]).get(doc_id)
        return self.get([key])[key] if key is not None else None

    def match(self, where: Filter) -> np.ndarray:
        """Keys of added documents (live or not: the caller intersects with its view) matching `where`."""
        if self._conn is None:
            return np.zeros(0, np.int64)
        clause, args = filters.sql(where)
        with self._lock:
            found = self._conn.execute(f"SELECT key FROM added WHERE {clause}", args).fetchall()
        return np.fromiter((k for (k,) in found), np.int64, len(found))

    def forget_types(self) -> None:
        """Another connection wrote to the log: the type summary is read again when next asked for."""
        with self._lock:
            self._types = None

    def metadata_types(self) -> dict[str, set[str]]:
        """Key → JSON types over every added document (replaced ones too: a superset)."""
        if self._conn is None:
            return {}
        with self._lock:  # apply() adds to it under this lock: read or build it there, hand out a copy
            if self._types is None:
                self._types = filters.sqlite_types(self._conn, "added")
            return {key: set(kinds) for key, kinds in self._types.items()}

    def documents(self, keys: np.ndarray) -> tuple[list[Document], np.ndarray]:
        """Documents and raw vectors of `keys`, in that order (rebuilds and compaction)."""
        if self._conn is None or not len(keys):
            return [], np.zeros((0, self.dim), np.float32)
        found = select_in(self._conn, self._lock, "SELECT key, id, text, metadata, raw FROM added WHERE key IN ({marks})",
                          [int(k) for k in keys])
        docs = {k: (Document(i, t, json.loads(m)), r) for k, i, t, m, r in found}
        ordered = [docs[int(k)] for k in keys]
        return [d for d, _ in ordered], self._raw([r for _, r in ordered])

    def counts(self) -> dict[str, int]:
        if self._conn is None:
            return {"added": 0, "gone": 0}
        with self._lock:
            added = self._conn.execute("SELECT COUNT(*) FROM added WHERE live = 1").fetchone()[0]
            gone = self._conn.execute("SELECT COUNT(*) FROM gone").fetchone()[0]
        return {"added": int(added), "gone": int(gone)}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
