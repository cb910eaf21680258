"""Document texts and metadata of a built version in SQLite, keyed by the index's row positions."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from . import filters
from .filters import Filter


@dataclass
class Document:
    id: str
    text: str
    metadata: dict = field(default_factory=dict)


class Documents(Protocol):
    """What a build reads: a sized, re-iterable run of documents (a list, or a lazy Corpus)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Document]: ...


class ServedCorpus(Documents, Protocol):
    """A served version's live documents, as a retriever hands them to a rebuild."""

    def merged(self, documents: list[Document]) -> ServedCorpus: ...

    def close(self) -> None: ...


def select_in(conn: sqlite3.Connection, lock: threading.Lock, sql: str, values: list) -> list[tuple]:
    """Rows of `sql` (with one `IN ({marks})`) for every value, in chunks below SQLite's variable limit."""
    out: list[tuple] = []
    with lock:
        for start in range(0, len(values), 500):
            part = values[start : start + 500]
            out += conn.execute(sql.format(marks=",".join("?" * len(part))), part).fetchall()
    return out


class DocumentStore:
    """Read side of one version's docs.sqlite; row i is the vector with FAISS id i."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self._types: dict[str, set[str]] | None = None

    @staticmethod
    def write(path: Path, documents: Iterable[Document]) -> int:
        """Write a new store (the caller writes into a fresh version folder)."""
        conn = sqlite3.connect(path)
        try:
            conn.execute("CREATE TABLE docs (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
                         "text TEXT NOT NULL, metadata TEXT NOT NULL)")
            conn.executemany(
                "INSERT INTO docs VALUES (?, ?, ?, ?)",
                ((i, d.id, d.text, json.dumps(d.metadata, ensure_ascii=False)) for i, d in enumerate(documents)),
            )
            conn.commit()
            return conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        finally:
            conn.close()

    def get(self, rows: list[int]) -> dict[int, Document]:
        found = select_in(self._conn, self._lock, "SELECT row, id, text, metadata FROM docs WHERE row IN ({marks})", rows)
        return {r: Document(i, t, json.loads(m)) for r, i, t, m in found}

    def by_id(self, doc_id: str) -> Document | None:
        with self._lock:
            row = self._conn.execute("SELECT id, text, metadata FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return Document(row[0], row[1], json.loads(row[2])) if row else None

    def match(self, where: Filter) -> np.ndarray:
        """Rows whose metadata passes `where`; evaluated by SQLite."""
        clause, args = filters.sql(where)
        with self._lock:
            found = self._conn.execute(f"SELECT row FROM docs WHERE {clause}", args).fetchall()
        return np.fromiter((r for (r,) in found), dtype=np.int64, count=len(found))

    def metadata_types(self) -> dict[str, set[str]]:
        """Key → JSON types over the stored documents (deleted ones too: a superset), read once."""
        with self._lock:
            if self._types is None:
                self._types = filters.sqlite_types(self._conn, "docs")
            return self._types

    def rows_of(self, ids: list[str]) -> dict[str, int]:
        """Row of each given id that is in the store."""
        return dict(select_in(self._conn, self._lock, "SELECT id, row FROM docs WHERE id IN ({marks})", ids))

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def page(self, after_row: int, limit: int) -> list[tuple[int, Document]]:
        """Up to `limit` documents with rows above `after_row`, in row order (a keyset page)."""
        with self._lock:
            rows = self._conn.execute("SELECT row, id, text, metadata FROM docs WHERE row > ? ORDER BY row LIMIT ?",
                                      (after_row, limit)).fetchall()
        return [(r, Document(i, t, json.loads(m))) for r, i, t, m in rows]

    def close(self) -> None:
        self._conn.close()


class Corpus:
    """The live documents of a version as a lazy, re-iterable sequence, for rebuilds and compaction:
    the built rows that are not gone, in row order, read from docs.sqlite a page at a time (never the
    whole store at once), then the documents added since. `merged` swaps documents by id as they pass
    and appends the new ones. It holds its own connection, so the version may be retired meanwhile."""

    PAGE = 5_000

    def __init__(self, path: Path, gone: np.ndarray | None, added: list[Document],
                 replace: dict[str, Document] | None = None) -> None:
        self.path, self._gone, self._added = path, gone, added
        self._store = DocumentStore(path)
        self._replace = replace or {}
        live = {i for i, r in self._store.rows_of(list(self._replace)).items() if gone is None or not gone[r]}
        live |= {d.id for d in added if d.id in self._replace}
        self._appended = [d for i, d in self._replace.items() if i not in live]
        base = self._store.count() - (int(gone.sum()) if gone is not None else 0)
        self._len = base + len(added) + len(self._appended)

    def merged(self, documents: list[Document]) -> Corpus:
        """This corpus with `documents` in it: an existing id is replaced in place, new ids come last."""
        return Corpus(self.path, self._gone, self._added, {**self._replace, **{d.id: d for d in documents}})

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Document]:
        last = -1
        while page := self._store.page(last, self.PAGE):
            for row, doc in page:
                if self._gone is None or not self._gone[row]:
                    yield self._replace.get(doc.id, doc)
            last = page[-1][0]
        for doc in self._added:
            yield self._replace.get(doc.id, doc)
        yield from self._appended

    def close(self) -> None:
        self._store.close()


class DocumentList(list):
    """A corpus read whole (a backend with no lazy reader): the same `merged` and `close` as Corpus."""

    def merged(self, documents: list[Document]) -> DocumentList:
        new = {d.id: d for d in documents}
        return DocumentList([new.pop(d.id, d) for d in self] + list(new.values()))

    def close(self) -> None:
        pass
