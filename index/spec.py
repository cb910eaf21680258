"""What an index is and how one request may search it, whichever backend holds it: the index type
and its parameters (resolved from the corpus size), and per-request search parameters."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from whitevec.models.errors import WhitevecError

INDEX_TYPES = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    """Index type and its parameters; None parameters are chosen from the corpus size."""

    type: str = "flat"
    nlist: int | None = None  # ivf: number of clusters
    nprobe: int | None = None  # ivf: clusters visited per query
    m: int | None = None  # hnsw: links per node
    ef_construction: int | None = None  # hnsw: candidate list while building
    ef_search: int | None = None  # hnsw: candidate list while searching

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {self.type!r}: choose one of {', '.join(INDEX_TYPES)}")
        for name in ("nlist", "nprobe", "m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"index parameter {name} must be ≥ 1, got {value}")

    def resolved(self, n: int) -> "IndexSpec":
        """Fill unset parameters with sane values for n vectors."""
        if self.type == "ivf":
            # ≥ 39 training points per centroid (FAISS's own floor), about 4·√n lists.
            nlist = self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            if nlist > n:
                raise ValueError(f"ivf nlist {nlist} exceeds the {n} vectors to index; lower nlist")
            nprobe = min(self.nprobe or max(1, nlist // 8), nlist)
            return replace(self, nlist=nlist, nprobe=nprobe)
        if self.type == "hnsw":
            # ef_search 128 holds recall@10 ≥ 0.95 to a few 100k vectors; at 1M × 128 it measured 0.918 and
            # 256 measured 0.978 at 2.3 ms p50 (benchmarks/index_search.py --n 1000000 --dim 128 --sweep).
            return replace(self, m=self.m or 32, ef_construction=self.ef_construction or 80,
                           ef_search=self.ef_search or (128 if n < HNSW_LARGE else 256))
        return self

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


#: From this many vectors on, hnsw's default ef_search doubles to keep recall@10 ≥ 0.95.
HNSW_LARGE = 300_000



@dataclass(frozen=True)
class SearchParams:
    """Per-request search parameters, checked against the index by `check_search_params`."""

    nprobe: int | None = None
    ef_search: int | None = None


def check_search_params(spec: IndexSpec, nprobe: int | None, ef_search: int | None, max_nprobe: int,
                        max_ef_search: int) -> SearchParams:
    """Per-request parameters for an index spec (any backend). A parameter the index type does not use
    is ignored (a client may send one setting to versions of several types), nprobe above the index's
    nlist visits every list (as FAISS does); only the server's limits are errors, saying what is allowed."""
    if nprobe is not None and nprobe > max_nprobe:
        raise WhitevecError(f"nprobe {nprobe} is above WHITEVEC_MAX_NPROBE {max_nprobe}", param="nprobe")
    if ef_search is not None and ef_search > max_ef_search:
        raise WhitevecError(f"ef_search {ef_search} is above WHITEVEC_MAX_EF_SEARCH {max_ef_search}",
                            param="ef_search")
    nprobe = min(nprobe, spec.nlist or 1) if nprobe is not None and spec.type == "ivf" else None
    ef_search = ef_search if spec.type == "hnsw" else None
    return SearchParams(nprobe, ef_search)
