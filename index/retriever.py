"""The retriever seam: every index operation the service makes, whichever backend holds the vectors.

`FaissRetriever` is the embedded backend: a version's immutable FAISS index and docs.sqlite, plus
its change log (index/changes.py) for upserts and deletes. Ids in the FAISS index are row positions
of the built version; added documents get keys from the base count upwards (stable, never reused).
A search reads one `Delta` view for its whole run, so a concurrent change is seen entirely or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .changes import ChangeLog, Delta
from .faiss_index import VectorIndex
from .spec import IndexSpec, SearchParams
from .filters import Filter, merge_types
from .lexical import LexicalIndex, Live
from .store import Corpus, Document, DocumentStore, ServedCorpus


@dataclass
class Hit:
    score: float
    document: Document


@dataclass
class ChangeResult:
    upserted: int
    deleted: int
    missing: list[str]


class Retriever(Protocol):
    """What the service asks of an index backend (one per served version)."""

    @property
    def spec(self) -> IndexSpec: ...

    def count(self, where: Filter | None = None) -> int:
        """Live rows (matching `where`, when given)."""
        ...

    def search_params(self, nprobe: int | None, ef_search: int | None, max_nprobe: int,
                      max_ef_search: int) -> SearchParams: ...

    async def search(self, queries: np.ndarray, k: int, params: SearchParams,
                     where: Filter | None = None) -> list[list[Hit]]: ...

    @property
    def has_lexical(self) -> bool:
        """The version keeps a lexical (BM25) index beside the dense one."""
        ...

    async def search_lexical(self, terms: list[list[str]], k: int, where: Filter | None = None) -> list[list[Hit]]:
        """BM25 top k per query (analyzed terms) among live documents matching `where`; only documents
        holding a query term are hits. Callers check `has_lexical` first."""
        ...

    def get(self, doc_id: str) -> Document | None: ...

    def metadata_types(self) -> dict[str, set[str]]:
        """Each metadata key in the version's documents → the JSON types it holds (filter warnings)."""
        ...

    def change(self, upserts: list[Document], raw: np.ndarray, deletes: list[str]) -> ChangeResult: ...

    def documents(self, base_raw: np.ndarray | None) -> tuple[ServedCorpus, np.ndarray | None]: ...

    @property
    def device(self) -> str:
        """Where searches run (reported by /readyz)."""
        ...

    @property
    def has_raw(self) -> bool:
        """The version keeps its raw pooled vectors (re-whitening and upserts need them)."""
        ...

    def stored_raw(self) -> np.ndarray | None:
        """The built rows' raw vectors, memory-mapped, for `documents` (None where `documents` reads its own)."""
        ...

    def change_counts(self) -> dict[str, int]:
        """Changes held outside the built index, for the versions report ({} where the backend folds them in)."""
        ...

    def pending_changes(self) -> int: ...

    def refresh(self) -> None:
        """Catch up with changes another holder of this version wrote since this one loaded (called under the
        change lock before the version is served, so no acknowledged change is missing from its view)."""
        ...

    def count_after(self, upsert_ids: list[str], deletes: list[str]) -> int: ...

    def sequence(self) -> int:
        """The journal head: the sequence number of the last acknowledged change."""
        ...

    def changed_since(self, seq: int) -> list[str]:
        """Ids changed (upserted or deleted) after `seq`, in the order they first changed."""
        ...

    def fetch(self, ids: list[str]) -> tuple[list[Document], np.ndarray | None]:
        """The live documents among `ids` with their raw pooled vectors (None where the version keeps none)."""
        ...

    def close(self) -> None: ...


#: Hits a GPU search may ask for (FAISS GPU's k limit): up to k + deleted rows it overfetches and drops
#: the deleted ones; past it, the CPU selector path.
MAX_OVERFETCH = 2048


def drop_gone(scores: np.ndarray, ids: np.ndarray, gone: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` hits per row that are not gone (rows keep their order); -1 pads a short row."""
    alive = (ids >= 0) & ~gone[np.clip(ids, 0, None)]
    order = np.argsort(~alive, axis=1, kind="stable")[:, :k]  # live hits first, each side in score order
    s, i = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    keep = np.take_along_axis(alive, order, 1)
    return np.where(keep, s, -np.inf).astype(np.float32), np.where(keep, i, -1)


class FaissRetriever:
    """A built version (FAISS index + docs.sqlite) and the changes logged to it since."""

    def __init__(self, index: VectorIndex, store: DocumentStore, log: ChangeLog,
                 transform: Callable[[np.ndarray], np.ndarray], raw_path: Path | None = None,
                 lexical: LexicalIndex | None = None) -> None:
        self.index, self.store, self.log, self.transform = index, store, log, transform
        self.raw_path = raw_path
        self.base_count = index.count
        self.lexical = lexical
        self._seen = log.head()  # the journal head this view includes (read first: a reload is idempotent)
        self.delta: Delta = log.load(transform, index.dim)
        self._analyze_added(self.delta.keys)

    def _analyze_added(self, keys: np.ndarray) -> None:
        """Give the lexical index the texts of added documents it has not analyzed yet (a key never changes
        its text, so each is read once)."""
        if self.lexical is None:
            return
        new = self.lexical.added.missing(keys)
        if len(new):
            found = self.log.get([int(k) for k in new])
            self.lexical.added.add(list(found), [d.text for d in found.values()])

    def refresh(self) -> None:
        if self.log.head() != self._seen:
            self._seen = self.log.head()
            self.log.forget_types()
            delta = self.log.load(self.transform, self.index.dim)
            self._analyze_added(delta.keys)
            self.delta = delta

    @property
    def spec(self) -> IndexSpec:
        return self.index.spec

    def count(self, where: Filter | None = None) -> int:
        d = self.delta
        if where is None:
            return self.base_count - d.n_gone + len(d.keys)
        rows = self.store.match(where)
        alive = int((~d.gone[rows]).sum()) if d.n_gone else len(rows)
        return alive + int(np.isin(self.log.match(where), d.keys).sum())

    def pending_changes(self) -> int:
        """Changes held outside the built index (gone rows + added documents): what compaction folds in."""
        d = self.delta
        return d.n_gone + len(d.keys)

    def search_params(self, nprobe: int | None, ef_search: int | None, max_nprobe: int,
                      max_ef_search: int) -> SearchParams:
        return self.index.search_params(nprobe, ef_search, max_nprobe, max_ef_search)

    async def search(self, queries: np.ndarray, k: int, params: SearchParams,
                     where: Filter | None = None) -> list[list[Hit]]:
        """Top k per query among live documents matching `where` (k whenever k match)."""
        delta = self.delta  # one view for the whole search
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if where is None and delta.n_gone == 0:
            scores, ids = await self.index.search_async(q, k, params)
        elif where is None and self.index.overfetches and k + delta.n_gone <= MAX_OVERFETCH:
            extra = min(k + delta.n_gone, self.index.count)
            scores, ids = await self.index.search_async(q, extra, params)
            scores, ids = drop_gone(scores, ids, delta.gone, min(k, self.index.count - delta.n_gone))
        else:
            scores, ids = await asyncio.to_thread(self._search_base, q, k, params, where, delta)
        if len(delta.keys):
            scores, ids = await asyncio.to_thread(self._merge_added, q, k, where, delta, scores, ids)
        return await asyncio.to_thread(self._hits, scores, ids)

    def _search_base(self, q: np.ndarray, k: int, params: SearchParams, where: Filter | None,
                     delta: Delta) -> tuple[np.ndarray, np.ndarray]:
        rows = delta.alive_rows() if where is None else self.store.match(where)
        if where is not None and delta.n_gone:
            rows = rows[~delta.gone[rows]]
        return self.index.search_rows(q, k, rows, params)

    def _merge_added(self, q: np.ndarray, k: int, where: Filter | None, delta: Delta,
                     scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the added documents, merged with the base hits by score."""
        keys, vectors = delta.keys, delta.vectors
        if where is not None:
            keep = np.isin(keys, self.log.match(where))
            keys, vectors = keys[keep], vectors[keep]
        if not len(keys):
            return scores, ids
        extra = q @ vectors.T
        s = np.concatenate([np.where(ids >= 0, scores, -np.inf), extra], axis=1)
        i = np.concatenate([ids, np.broadcast_to(keys, extra.shape)], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, : min(k, s.shape[1])]
        s, i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        return s.astype(np.float32), np.where(np.isfinite(s), i, -1)

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        base = [i for i in wanted if i < self.base_count]
        docs = {**self.store.get(base), **self.log.get([i for i in wanted if i >= self.base_count])}
        return [[Hit(float(s), docs[int(i)]) for s, i in zip(row_s, row_i) if i >= 0]
                for row_s, row_i in zip(scores, ids)]

    @property
    def has_lexical(self) -> bool:
        return self.lexical is not None

    async def search_lexical(self, terms: list[list[str]], k: int, where: Filter | None = None) -> list[list[Hit]]:
        return await asyncio.to_thread(self._search_lexical, terms, k, where)

    def _search_lexical(self, terms: list[list[str]], k: int, where: Filter | None) -> list[list[Hit]]:
        assert self.lexical is not None, "callers check has_lexical"
        delta = self.delta  # one view for the whole search
        live = Live(delta.gone, delta.keys)
        rows = keys = None
        if where is not None:
            rows = self.store.match(where)
            keys = self.log.match(where)
        found = [self.lexical.search(t, k, live, rows, keys) for t in terms]
        width = max([len(i) for _, i in found] + [1])
        scores = np.full((len(found), width), -np.inf, np.float32)
        ids = np.full((len(found), width), -1, np.int64)
        for r, (s, i) in enumerate(found):
            scores[r, :len(s)], ids[r, :len(i)] = s, i
        return self._hits(scores, ids)

    def metadata_types(self) -> dict[str, set[str]]:
        return merge_types(self.store.metadata_types(), self.log.metadata_types())

    def get(self, doc_id: str) -> Document | None:
        added = self.log.by_id(doc_id)
        if added is not None:
            return added
        row = self.store.rows_of([doc_id]).get(doc_id)
        if row is None or self.delta.gone[row]:
            return None
        return self.store.get([row])[row]

    def change(self, upserts: list[Document], raw: np.ndarray, deletes: list[str]) -> ChangeResult:
        """Upsert (`raw`: their pooled vectors) and delete, durable when this returns; one caller at a time."""
        delta = self.delta
        ids = list(dict.fromkeys([d.id for d in upserts] + list(deletes)))
        live = self.log.live_keys(ids)
        base = {i: r for i, r in self.store.rows_of(ids).items() if not delta.gone[r]}
        asked = list(dict.fromkeys(deletes))
        missing = [i for i in asked if i not in live and i not in base]
        if not upserts and len(missing) == len(asked):
            return ChangeResult(0, 0, missing)
        done = [i for i in asked if i not in missing]
        keys = self.log.apply(upserts, raw, list(base.values()), list(live.values()),
                              list(dict.fromkeys([d.id for d in upserts] + done)))
        if self.lexical is not None:  # before the view that holds the keys is swapped in
            self.lexical.added.add(keys, [d.text for d in upserts])
        self._seen = self.log.head()
        vectors = self.transform(raw) if len(upserts) else np.zeros((0, self.index.dim), np.float32)
        self.delta = delta.changed(np.fromiter(base.values(), np.int64, len(base)),
                                   np.fromiter(live.values(), np.int64, len(live)), keys, vectors)
        return ChangeResult(len(upserts), len(asked) - len(missing), missing)

    def count_after(self, upsert_ids: list[str], deletes: list[str]) -> int:
        """The live count a change would leave (checked before encoding anything)."""
        ids = list(dict.fromkeys([*upsert_ids, *deletes]))
        live = self.log.live_keys(ids)
        base = {i for i, r in self.store.rows_of(ids).items() if not self.delta.gone[r]}
        return self.count() - len(set(live) | base) + len(set(upsert_ids))

    def documents(self, base_raw: np.ndarray | None) -> tuple[Corpus, np.ndarray | None]:
        """Every live document (built rows in order, then added ones) as a lazy Corpus and, given the
        built version's raw vectors, theirs in the same order: what a rebuild or a compaction starts from."""
        delta = self.delta
        added, added_raw = self.log.documents(delta.keys)
        docs = Corpus(self.store.path, delta.gone if delta.n_gone else None, added)
        if base_raw is None:
            return docs, None
        if not delta.n_gone and not len(added):  # no changes: the stored vectors as they are, memory-mapped
            return docs, base_raw
        alive = delta.alive_rows() if delta.n_gone else slice(None)
        return docs, np.concatenate([np.asarray(base_raw[alive], dtype=np.float32), added_raw])

    @property
    def device(self) -> str:
        return self.index.device

    @property
    def has_raw(self) -> bool:
        return self.raw_path is not None and self.raw_path.is_file()

    def stored_raw(self) -> np.ndarray | None:
        return np.load(self.raw_path, mmap_mode="r") if self.has_raw else None

    def change_counts(self) -> dict[str, int]:
        return {"added": len(self.delta.keys), "gone": self.delta.n_gone}

    def sequence(self) -> int:
        return self.log.head()

    def changed_since(self, seq: int) -> list[str]:
        return self.log.changed_since(seq)

    def fetch(self, ids: list[str]) -> tuple[list[Document], np.ndarray | None]:
        delta = self.delta
        live = self.log.live_keys(ids)
        added, added_raw = self.log.documents(np.fromiter(live.values(), np.int64, len(live)))
        rows = {i: r for i, r in self.store.rows_of([i for i in ids if i not in live]).items() if not delta.gone[r]}
        base = self.store.get(list(rows.values()))
        docs = added + [base[r] for r in rows.values()]
        if not self.has_raw:
            return docs, None
        stored = np.load(self.raw_path, mmap_mode="r")
        base_raw = np.asarray(stored[np.fromiter(rows.values(), np.int64, len(rows))], np.float32)
        return docs, np.concatenate([added_raw, base_raw.reshape(len(rows), added_raw.shape[1])])

    def close(self) -> None:
        self.index.close()
        self.store.close()
        self.log.close()
