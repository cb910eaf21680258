"""BM25 over a version's documents: the built rows' postings (a part of the version, never changed) and the
documents its change log added since, scored together as one corpus.

Ids are the dense side's: built rows 0…n−1, added documents their change-log keys (n upwards, never
reused), so a lexical hit and a dense hit of one document carry the same id and fuse. Statistics (the live
document count, the mean length, each term's document frequency) are over the live documents of the view
a search reads — deleted and replaced rows no longer count — and never depend on the search's filter.

Scoring (Robertson's BM25 with Lucene's non-negative idf), for each distinct query term t in document d:
    idf(t) · tf(t, d) · (k1 + 1) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl)),
    idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))
Ties break by id, lowest first. Only documents holding at least one query term are hits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import analyzer


@dataclass(frozen=True)
class BM25:
    """BM25's two knobs: k1 (how fast repeated terms saturate) and b (how much length normalises)."""

    k1: float = 1.2
    b: float = 0.75

    def __post_init__(self) -> None:
        if not (0 <= self.k1 <= 10) or not (0 <= self.b <= 1):
            raise ValueError(f"bm25: k1 must lie in [0, 10] and b in [0, 1], not k1={self.k1}, b={self.b}")

    def to_dict(self) -> dict:
        return asdict(self)


class Postings:
    """The built rows' terms: for each term (by id), the rows holding it and how often (CSR by term)."""

    def __init__(self, terms: list[str], indptr: np.ndarray, rows: np.ndarray, tf: np.ndarray,
                 lengths: np.ndarray) -> None:
        self.terms = terms
        self.vocab = {t: i for i, t in enumerate(terms)}
        self.indptr, self.rows, self.tf, self.lengths = indptr, rows, tf, lengths
        self._dl = lengths[rows] if len(rows) else np.zeros(0, np.float32)  # per posting: no gather per query

    @property
    def count(self) -> int:
        return len(self.lengths)

    @classmethod
    def build(cls, texts: Iterable[str]) -> "Postings":
        """Analyze every text (in row order) and invert."""
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        rows: list[int] = []
        tfs: list[int] = []
        lengths: list[int] = []
        for row, text in enumerate(texts):
            counts, length = analyzer.term_counts(text)
            lengths.append(length)
            for term, tf in counts.items():
                term_ids.append(vocab.setdefault(term, len(vocab)))
                rows.append(row)
                tfs.append(tf)
        t = np.asarray(term_ids, np.int64)
        order = np.argsort(t, kind="stable")  # by term, rows ascending within a term
        indptr = np.zeros(len(vocab) + 1, np.int64)
        np.cumsum(np.bincount(t, minlength=len(vocab)), out=indptr[1:])
        return cls(list(vocab), indptr, np.asarray(rows, np.int32)[order], np.asarray(tfs, np.float32)[order],
                   np.asarray(lengths, np.float32))

    def save(self, path: Path) -> None:
        """One .npz without pickles: the terms as one newline-joined UTF-8 blob (no token holds a newline)."""
        blob = np.frombuffer("\n".join(self.terms).encode("utf-8"), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, terms=blob, indptr=self.indptr, rows=self.rows, tf=self.tf, lengths=self.lengths)

    @classmethod
    def load(cls, path: Path) -> "Postings":
        with np.load(path, allow_pickle=False) as z:
            text = z["terms"].tobytes().decode("utf-8")
            terms = text.split("\n") if text else []
            postings = cls(terms, z["indptr"], z["rows"], z["tf"], z["lengths"])
        if len(postings.indptr) != len(terms) + 1 or postings.indptr[-1] != len(postings.rows):
            raise ValueError(f"{path.name}: its postings do not match its {len(terms)} terms")
        return postings

    def of(self, term: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, term frequencies, row lengths) of one term; empty when no built row holds it."""
        i = self.vocab.get(term)
        if i is None:
            return np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32)
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.rows[lo:hi], self.tf[lo:hi], self._dl[lo:hi]


class AddedTerms:
    """The terms of documents the change log added, by key. Append-only (a key always names the same text):
    a search keeps only the keys its view holds live, so it never needs a copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inverted: dict[str, dict[int, int]] = {}
        self._lengths: dict[int, int] = {}

    def add(self, keys: Iterable[int], texts: Iterable[str]) -> None:
        analyzed = [(int(k), *analyzer.term_counts(t)) for k, t in zip(keys, texts)]  # outside the lock
        with self._lock:
            for key, counts, length in analyzed:
                self._lengths[key] = length
                for term, tf in counts.items():
                    self._inverted.setdefault(term, {})[key] = tf

    def missing(self, keys: np.ndarray) -> np.ndarray:
        """The keys among `keys` not analyzed yet."""
        with self._lock:
            return np.fromiter((k for k in keys if int(k) not in self._lengths), np.int64)

    def lengths(self, keys: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.fromiter((self._lengths[int(k)] for k in keys), np.float32, len(keys))

    def of(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, term frequencies) of every added document ever holding `term` (live or not)."""
        with self._lock:
            found = list(self._inverted.get(term, {}).items())
        return (np.fromiter((k for k, _ in found), np.int64, len(found)),
                np.fromiter((f for _, f in found), np.float32, len(found)))


@dataclass(frozen=True)
class Live:
    """Which documents a search counts: built rows not gone, and the live added keys (one view's)."""

    gone: np.ndarray  # bool per built row
    keys: np.ndarray  # live added keys
    n_gone: int | None = None  # gone.sum(), when the caller knows it already


class LexicalIndex:
    """BM25 over built postings plus added documents, for one version."""

    def __init__(self, postings: Postings, params: BM25) -> None:
        self.postings, self.params = postings, params
        self.added = AddedTerms()
        self._stats: tuple[Live, float] | None = None  # the live view the total length was counted for

    def _total_length(self, live: Live) -> float:
        cached = self._stats
        if cached is not None and cached[0].gone is live.gone and cached[0].keys is live.keys:
            return cached[1]
        built = float(self.postings.lengths[~live.gone].sum()) if len(live.gone) else 0.0
        total = built + float(self.added.lengths(live.keys).sum())
        self._stats = (live, total)
        return total

    def search(self, terms: list[str], k: int, live: Live, allowed_rows: np.ndarray | None = None,
               allowed_keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), best first, at most k: live documents holding a query term (and, given them, among
        `allowed_rows` / `allowed_keys`, what a filter matched).

        Built rows are scored into one array over the whole version (a bincount: O(postings + rows), no
        sort of the postings), added documents apart (few: the change log is compacted past a size)."""
        base = self.postings.count
        n_gone = int(live.gone.sum()) if live.n_gone is None else live.n_gone
        n = base - n_gone + len(live.keys)
        if not terms or n == 0 or k < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        avgdl = np.float32(self._total_length(live) / n or 1.0)
        k1, b = np.float32(self.params.k1), np.float32(self.params.b)
        allowed = None
        if allowed_rows is not None:
            allowed = np.zeros(base, bool)
            allowed[allowed_rows] = True
        rows_all, parts, key_ids, key_parts = [], [], [], []
        for term in dict.fromkeys(terms):  # each distinct term once
            rows, tf, dl = self.postings.of(term)
            if n_gone:
                alive = ~live.gone[rows]
                rows, tf, dl = rows[alive], tf[alive], dl[alive]
            keys, ktf = self.added.of(term)
            if len(keys):
                held = np.isin(keys, live.keys)
                keys, ktf = keys[held], ktf[held]
            df = len(rows) + len(keys)
            if df == 0:
                continue
            idf = np.float32(np.log1p((n - df + 0.5) / (df + 0.5)))  # float32 throughout: postings are large
            if allowed is not None:
                keep = allowed[rows]
                rows, tf, dl = rows[keep], tf[keep], dl[keep]
            if allowed_keys is not None and len(keys):
                keep = np.isin(keys, allowed_keys)
                keys, ktf = keys[keep], ktf[keep]
            rows_all.append(rows)
            parts.append(idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)))
            if len(keys):
                kdl = self.added.lengths(keys)
                key_ids.append(keys)
                key_parts.append(idf * ktf * (k1 + 1) / (ktf + k1 * (1 - b + b * kdl / avgdl)))
        ids, scores = self._built(rows_all, parts, base)
        if key_ids:
            every, inverse = np.unique(np.concatenate(key_ids), return_inverse=True)
            ids = np.concatenate([ids, every])
            scores = np.concatenate([scores, np.bincount(inverse, weights=np.concatenate(key_parts),
                                                         minlength=len(every))])
        if len(ids) > k:  # the k best (and every tie at the k-th score), then ordered exactly
            cut = np.partition(-scores, k - 1)[k - 1]
            keep = -scores <= cut
            ids, scores = ids[keep], scores[keep]
        order = np.lexsort((ids, -scores))[:k]  # score descending, then id ascending
        return scores[order].astype(np.float32), ids[order]

    @staticmethod
    def _built(rows_all: list[np.ndarray], parts: list[np.ndarray], base: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, summed scores) of the built rows holding a query term."""
        if not rows_all:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        rows = np.concatenate(rows_all)
        weights = np.concatenate(parts)
        if len(rows) * 8 < base:  # few postings: sort them rather than sweep every row
            every, inverse = np.unique(rows, return_inverse=True)
            return every.astype(np.int64), np.bincount(inverse, weights=weights, minlength=len(every))
        summed = np.bincount(rows, weights=weights, minlength=base)
        hit = np.zeros(base, bool)
        hit[rows] = True
        found = np.flatnonzero(hit)
        return found.astype(np.int64), summed[found]
