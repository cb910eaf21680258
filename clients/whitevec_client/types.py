"""What the SDK sends and gets back: request shapes as TypedDicts, answers as models and TypedDicts.
They mirror the server's OpenAPI schemas (tests/clients compares the two)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Literal, Optional, Sequence, TypedDict, Union

from pydantic import BaseModel, Field

# --- request shapes ------------------------------------------------------------------------------------


class _DocumentBase(TypedDict):
    id: str
    text: str


class Document(_DocumentBase, total=False):
    """One document to index: `{"id": "faq-1", "text": "…", "metadata": {"lang": "en"}}`."""

    metadata: Optional[Dict[str, Any]]


class Example(TypedDict):
    """A training sentence and its class: texts with the same label mean the same."""

    text: str
    label: Union[str, int]


class Pair(TypedDict):
    """A scored training pair; pairs at or above `pair_threshold` are joined into one class."""

    text_a: str
    text_b: str
    score: float


class _AutoPairs(TypedDict):
    pairs: str


class AutoWhitening(_AutoPairs, total=False):
    """Choose (β, γ, dim) on labelled pairs (`pairs`, required: a file in the server's import folder)."""

    max_dim: Optional[int]
    tolerance: float
    seed: int


class Whitening(TypedDict, total=False):
    """β (mean removal), γ (variance equalisation), kept dims; or `auto` instead of all three.
    A key left out (or None) takes the server's default."""

    beta: Optional[float]
    gamma: Optional[float]
    dim: Optional[int]
    auto: Optional[AutoWhitening]


class IndexSpec(TypedDict, total=False):
    """The FAISS index: `{"type": "hnsw", "m": 32}`; a key left out takes the server's default."""

    type: Optional[Literal["flat", "ivf", "hnsw"]]
    nlist: Optional[int]
    nprobe: Optional[int]
    m: Optional[int]
    ef_construction: Optional[int]
    ef_search: Optional[int]


#: A metadata filter, AND over keys: `{"lang": "en", "year": {"$gte": 2020, "$lt": 2024}}`.
Filter = Dict[str, Any]

#: How /search finds documents: nearest vectors, BM25 over words, or both fused.
SearchMode = Literal["dense", "lexical", "hybrid"]
#: How a collection with passages turns passage hits into document hits.
Group = Literal["max", "mean_top", "none"]


class _Rrf(TypedDict):
    method: Literal["rrf"]


class RrfFusion(_Rrf, total=False):
    """Reciprocal rank fusion: each side adds 1 / (k + rank); `k` defaults to 60."""

    k: int


class _Weighted(TypedDict):
    method: Literal["weighted"]


class WeightedFusion(_Weighted, total=False):
    """alpha · dense + (1 − alpha) · lexical, each side's scores min-max normalised per query."""

    alpha: float


Fusion = Union[RrfFusion, WeightedFusion]


class Bm25(TypedDict, total=False):
    """The lexical index's BM25 knobs: k1 (default 1.2) and b (default 0.75)."""

    k1: float
    b: float


class SearchSetting(TypedDict, total=False):
    """A collection's default search: `mode` ("dense" unless given), `fusion` for hybrid, BM25's knobs."""

    mode: SearchMode
    fusion: Optional[Fusion]
    bm25: Optional[Bm25]


class _SearchPairs(TypedDict):
    pairs: str


class AutoSearch(_SearchPairs, total=False):
    """Choose the default search on labelled pairs (`pairs`: a file in the server's import folder)."""

    seed: int


class SearchTuning(TypedDict):
    """A rebuild's `search`: {"auto": {"pairs": "pairs.tsv"}}."""

    auto: AutoSearch

# --- answers ---------------------------------------------------------------------------------------------


class SideExplain(BaseModel):
    """One side's view of a hit: its score and rank there (and, lexical, the query terms it holds)."""

    score: float
    rank: int
    terms: Optional[List[str]] = None


class HitExplain(BaseModel):
    dense: Optional[SideExplain]
    lexical: Optional[SideExplain]


class PassageHit(BaseModel):
    """A passage of a hit's document: `hit.text[start:end]`, and its own score."""

    start: int
    end: int
    score: float


class Hit(BaseModel):
    id: str
    score: float
    text: str
    metadata: Dict[str, Any]
    passages: Optional[List[PassageHit]] = None
    explain: Optional[HitExplain] = None

    def passage_texts(self) -> List[str]:
        """The matched passages' texts, best first ([] for a collection without passages)."""
        return [self.text[p.start:p.end] for p in self.passages or []]


class Hits(List[Hit]):
    """One query's hits, best first: a list of Hit that also carries the answer's `version` and its
    `warnings` (e.g. a filter key no document has: the search answered, most likely with no hits)."""

    def __init__(self, hits: Iterable[Hit] = (), query: str = "", version: str = "",
                 warnings: Sequence[str] = ()) -> None:
        super().__init__(hits)
        self.query = query
        self.version = version
        self.warnings: List[str] = list(warnings)

    def __repr__(self) -> str:
        return f"Hits({list.__repr__(self)}, version={self.version!r}, warnings={self.warnings!r})"


class JobProgress(BaseModel):
    done: int
    total: int
    phase: Optional[str] = None


class Job(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    progress: JobProgress
    created_at: str
    started_at: Optional[str]
    finished_at: Optional[str]
    error: Optional[str]
    result: Optional[Dict[str, Any]]
    detail: Dict[str, Any] = Field(default_factory=dict)
    replica: Optional[str] = None
    collection: str = "default"

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "interrupted")


class TrainJob(Job):
    """A training job as submitted, with what the server made of the data."""

    classes: int = Field(description="Classes formed from the data.")
    texts: int = Field(description="Sentences used (those in one-member classes are dropped).")
    warnings: List[str] = Field(default_factory=list)
    model_name: Optional[str] = Field(None, description="The folder the fine-tuned model is written to.")


class PassageSpan(TypedDict):
    start: int
    end: int


class _StoredDocumentBase(TypedDict):
    id: str
    text: str
    metadata: Dict[str, Any]
    version: str


class StoredDocument(_StoredDocumentBase, total=False):
    """A served document; `passages` (text[start:end] each) in a collection with passages."""

    passages: List[PassageSpan]


class Passages(TypedDict, total=False):
    """How a collection splits documents: tokens per passage ([CLS] and [SEP] included) and tokens carried
    over; None for either: from the model's max length."""

    max_tokens: Optional[int]
    overlap: Optional[int]


class Upserted(TypedDict):
    upserted: int
    version: Optional[str]


class Deleted(TypedDict):
    deleted: int
    missing: List[str]
    version: Optional[str]


class VersionList(TypedDict):
    active: Optional[str]
    versions: List[Dict[str, Any]]


class Activated(TypedDict):
    active: str
    documents: int


class CollectionDeleted(TypedDict):
    deleted: str
    documents: int


class KeyRevoked(TypedDict):
    revoked: str
