"""Dense, lexical or fused search over one retriever: the modes of /search and how the two sides meet.

Hybrid search asks each side for its best `depth` candidates (filters applied on both sides first) and
fuses them: reciprocal rank fusion (each side adds 1 / (k + rank)), or a weighted sum of each side's scores
min-max normalised over its own candidates for this query (alpha weighs the dense side; a document one
side did not find gets 0 from it). A hit keeps both sides' scores and ranks for `explain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from whitevec.models.errors import WhitevecError

from . import analyzer
from .filters import Filter
from .retriever import Hit, Retriever
from .spec import SearchParams
from .store import Document

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "lexical", "hybrid")
#: Candidates each side gives a hybrid search, at the least (k more when k is larger).
DEPTH = 100


class NoLexicalIndex(WhitevecError):
    """The served version keeps no lexical index (built before them, or on a backend without one)."""


@dataclass(frozen=True)
class Fusion:
    """How hybrid search merges the sides: `rrf` with its constant k, or `weighted` with the dense weight."""

    method: Literal["rrf", "weighted"] = "rrf"
    k: int = 60
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "weighted"):
            raise ValueError(f"fusion method {self.method!r}: give rrf or weighted")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"fusion alpha {self.alpha}: give a weight from 0 to 1 (the dense side's)")
        if self.k < 1:
            raise ValueError(f"fusion k {self.k}: give a whole number of at least 1")

    def to_dict(self) -> dict:
        return {"method": "rrf", "k": self.k} if self.method == "rrf" else {"method": "weighted", "alpha": self.alpha}


@dataclass
class Side:
    """One side's view of a hit: its score and 1-based rank there."""

    score: float
    rank: int


@dataclass
class FusedHit:
    """A hit of any mode: the score it is ranked by, and each side's own view of it (None: not found there)."""

    score: float
    document: Document
    dense: Side | None = None
    lexical: Side | None = None
    terms: list[str] | None = None  # the query's terms this document holds (lexical side)

    def explain(self) -> dict:
        return {"dense": None if self.dense is None else {"score": self.dense.score, "rank": self.dense.rank},
                "lexical": None if self.lexical is None else {"score": self.lexical.score,
                                                              "rank": self.lexical.rank, "terms": self.terms}}


def no_lexical() -> NoLexicalIndex:
    return NoLexicalIndex("the served version has no lexical index (it was built before hybrid search, or its "
                          "backend keeps none): rebuild the collection to search it with mode lexical or hybrid or "
                          "with explain, or search with mode dense")


async def search(retriever: Retriever, mode: Mode, queries: list[str], vectors: np.ndarray | None, k: int,
                 params: SearchParams, where: Filter | None = None, fusion: Fusion = Fusion(),
                 explain: bool = False) -> tuple[list[list[FusedHit]], list[str]]:
    """Top k per query in `mode` (vectors: the queries' served vectors, for dense and hybrid), and warnings
    (a query with no words for the lexical side). NoLexicalIndex when the mode or `explain` needs a lexical
    index the version does not keep."""
    if (mode != "dense" or explain) and not retriever.has_lexical:
        raise no_lexical()
    depth = k if mode != "hybrid" and not explain else max(k, DEPTH)
    none: list[list[Hit]] = [[] for _ in queries]
    dense = await retriever.search(vectors, depth, params, where) if mode != "lexical" or explain else none
    terms = [analyzer.analyze(q) for q in queries] if mode != "dense" or explain else [[] for _ in queries]
    said = [f"query {i} ({queries[i][:40]!r}) has no words the lexical index counts (only punctuation, spaces or "
            "symbols): its lexical side is empty" + (", the dense side answers" if mode == "hybrid" else "")
            for i, t in enumerate(terms) if not t and mode != "dense"]
    lexical = await retriever.search_lexical(terms, depth, where) if mode != "dense" or explain else none
    results = [fuse(d, lex, t, k, mode, fusion, explain) for d, lex, t in zip(dense, lexical, terms)]
    return results, said


def fuse(dense: list[Hit], lexical: list[Hit], terms: list[str], k: int, mode: Mode, fusion: Fusion,
          explain: bool) -> list[FusedHit]:
    """Rank one query's candidates by `mode` (the other side, when explained, only annotates them)."""
    hits: dict[str, FusedHit] = {}
    for rank, h in enumerate(dense, 1):
        hits[h.document.id] = FusedHit(h.score, h.document, dense=Side(h.score, rank))
    for rank, h in enumerate(lexical, 1):
        hit = hits.setdefault(h.document.id, FusedHit(h.score, h.document))
        hit.lexical = Side(h.score, rank)
    if mode == "dense":
        hits = {i: h for i, h in hits.items() if h.dense is not None}
    elif mode == "lexical":
        hits = {i: h for i, h in hits.items() if h.lexical is not None}
        for hit in hits.values():
            hit.score = hit.lexical.score
    if mode == "hybrid":
        d_norm, l_norm = _minmax(dense), _minmax(lexical)
        for hit in hits.values():
            d, lx = hit.dense, hit.lexical
            if fusion.method == "rrf":
                hit.score = sum(1.0 / (fusion.k + s.rank) for s in (d, lx) if s is not None)
            else:
                hit.score = (fusion.alpha * (d_norm(d.score) if d else 0.0)
                             + (1 - fusion.alpha) * (l_norm(lx.score) if lx else 0.0))
    inf = float("inf")

    def order(h: FusedHit) -> tuple:
        """Score first; ties by the ranking side's own order (a single mode never looks at the side that
        only annotates it, so explain changes no ranking), hybrid by the dense rank, then the lexical."""
        dense_rank, lexical_rank = h.dense.rank if h.dense else inf, h.lexical.rank if h.lexical else inf
        return (-h.score, lexical_rank) if mode == "lexical" else (-h.score, dense_rank, lexical_rank)
    ranked = sorted(hits.values(), key=order)[:k]
    if explain:
        wanted = set(terms)
        for hit in ranked:
            if hit.lexical is not None:
                held = set(analyzer.analyze(hit.document.text)) & wanted
                hit.terms = [t for t in dict.fromkeys(terms) if t in held]
    return ranked


def _minmax(hits: list[Hit]):
    """Scores mapped onto [0, 1] over this side's candidates (all 1 when they are equal)."""
    if not hits:
        return lambda s: 0.0
    low, high = min(h.score for h in hits), max(h.score for h in hits)
    span = high - low
    return (lambda s: (s - low) / span) if span > 0 else (lambda s: 1.0)
