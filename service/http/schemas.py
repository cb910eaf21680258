"""Request and response bodies of the data plane: embed, search, documents and rebuilds (admin_schemas.py has
the admin API's). Unknown fields and wrong types are refused (422), never coerced.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from whitevec.index import filters

#: A character Python's str.strip() keeps, written out so every regex engine (pydantic's, a client's JSON
#: Schema validator) reads it alike: `\S` differs between them on U+001C-U+001F and U+0085.
VISIBLE = r"[^\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
NonEmpty = Annotated[str, StringConstraints(min_length=1, pattern=VISIBLE)]


def exactly_one(*names: str) -> list[dict]:
    """JSON Schema for "exactly one of these fields is given (not null)", as the validators enforce."""
    return [{"required": [name], "properties": {other: ({"not": {"type": "null"}} if other == name else {"type": "null"})
                                                for other in names}} for name in names]


def _is_int(annotation: Any) -> bool:
    return annotation is int or (get_origin(annotation) in (Union, UnionType)
                                 and set(get_args(annotation)) <= {int, type(None)} and int in get_args(annotation))


class Strict(BaseModel):
    """Unknown fields and wrong types are refused; NaN and ±inf are not numbers here. Integer fields
    take integers as JSON Schema defines them: 3 and 3.0 (JSON has one number type), never 3.5, "3" or true."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _json_integers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            ints = {name for name, f in cls.model_fields.items() if _is_int(f.annotation)}
            return {k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        return data


class EmbedRequest(Strict):
    texts: list[NonEmpty] = Field(min_length=1, description="Texts to embed, in order.")
    whiten: bool = Field(True, description="Apply the active version's whitening; false: raw pooled vectors.")
    dim: int | None = Field(None, ge=1, description="Kept dims (≤ the fitted dim); null: the version's default.")
    normalize: bool = Field(True, description="L2-normalise each vector.")

    model_config = ConfigDict(json_schema_extra={
        "examples": [{"texts": ["How do I reset my password?"], "whiten": True, "dim": None, "normalize": True}],
        # dim keeps whitened axes: with whiten false it must be left out (checked, and declared here)
        "if": {"required": ["whiten"], "properties": {"whiten": {"const": False}}},
        "then": {"properties": {"dim": {"type": "null"}}}})


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]
    truncated: list[bool] = Field(description="True where a text was longer than the model's max length.")
    whitened: bool = Field(description="False when whiten was asked but no whitening is fitted yet.")
    version: str | None = Field(description="The serving version (null before any index is built).")


class RrfFusion(Strict):
    method: Literal["rrf"]
    k: int = Field(60, ge=1, le=10_000, description="RRF's constant: each side adds 1 / (k + rank).")


class WeightedFusion(Strict):
    method: Literal["weighted"]
    alpha: float = Field(0.5, ge=0, le=1, description="The dense side's weight; the lexical side's is 1 − alpha. "
                         "Each side's scores are min-max normalised over its candidates for the query.")


FusionIn = Annotated[Union[RrfFusion, WeightedFusion], Field(discriminator="method")]


class Bm25In(Strict):
    k1: float = Field(1.2, ge=0, le=10, description="How fast repeated words saturate.")
    b: float = Field(0.75, ge=0, le=1, description="How much document length normalises (0: not at all).")


class SearchSettingIn(Strict):
    mode: Literal["dense", "lexical", "hybrid"] = Field("dense", description="What /search does without `mode`.")
    fusion: FusionIn | None = Field(None, description="hybrid's fusion without `fusion` (default rrf, k 60).")
    bm25: Bm25In | None = Field(None, description="The lexical index's BM25 knobs, for this collection's rebuilds.")


class SearchAutoIn(Strict):
    pairs: NonEmpty = Field(description="A sentence1<TAB>sentence2<TAB>score file in the import folder; pairs "
                            "scored 4 or more are the queries, the second sentences the corpus.")
    seed: int = Field(0, description="Which half of the queries chooses (the other reports).")


class SearchTuneIn(Strict):
    auto: SearchAutoIn = Field(description="Choose dense, lexical or a fusion on labelled pairs with the new "
                               "version's model and fit; the choice becomes the collection's default search.")


class SearchRequest(Strict):
    query: NonEmpty | None = Field(None, description="One query; or use `queries`.")
    queries: list[NonEmpty] | None = Field(None, min_length=1, description="Several queries, answered in order.")
    k: int = Field(10, ge=1, description="Hits per query.")
    nprobe: int | None = Field(None, ge=1, description="ivf: clusters visited per query (above the index's "
                                   "nlist: all of them), at most WHITEVEC_MAX_NPROBE; ignored by other index "
                                   "types; null: the version's own.")
    ef_search: int | None = Field(None, ge=1, description="hnsw only: candidate list per query, at most "
                                  "WHITEVEC_MAX_EF_SEARCH; null: the version's own.")
    filter: dict[str, Any] | None = Field(
        None, description='Metadata filter, AND over keys: `{"lang": "en", "year": {"$gte": 2020, "$lt": 2024}, '
        '"tags": {"$in": ["faq", "billing"]}}`. A key takes a value (string, number, boolean or null) or an object '
        "of operators that must all hold: $eq, $ne, $in, $nin (lists of values), $gt, $gte, $lt, $lte (numbers) "
        "and $exists (true/false). Values compare with their JSON type (1 matches 1.0, never true or \"1\"); a "
        "list in a document matches when any element does; $ne and $nin match documents without the key. Hits "
        "are only matching documents, k of them whenever k match; `warnings` names keys and value types no "
        "document has.")

    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="dense: nearest vectors (the default); lexical: BM25 over the documents' words (jieba "
        "words for Chinese); hybrid: both, fused. The version must have been built with a lexical index for "
        "lexical, hybrid and explain.")
    fusion: FusionIn | None = Field(None, description='hybrid only: {"method": "rrf", "k": 60} (the default) or '
                                    '{"method": "weighted", "alpha": 0.5}.')
    explain: bool = Field(False, description="Add to each hit its dense score and rank and its lexical score, rank "
                          "and matched terms (null for a side that did not find it among its candidates).")
    group: Literal["max", "mean_top", "none"] = Field(
        "max", description="Collections with passages: how passage hits become document hits. max: a document "
        "scores its best passage; mean_top: the mean of its best `mean_top` passages; none: every passage is a "
        "hit of its own (a document may come back several times). Hits are k distinct documents whenever k "
        "match (except with none). Ignored by collections without passages.")
    mean_top: int = Field(3, ge=1, le=100, description="group mean_top: how many of a document's best passages "
                          "its score averages.")

    @model_validator(mode="after")
    def _one_of(self) -> "SearchRequest":
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of `query` (a string) or `queries` (a list of strings)")
        return self

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            filters.parse(value)  # FilterError is a ValueError: a 422 with its sentence
        return value

    def where(self) -> filters.Filter | None:
        """The parsed filter (None: every document)."""
        return None if self.filter is None else filters.parse(self.filter)

    model_config = ConfigDict(json_schema_extra={"examples": [{"query": "cheap flights to Tokyo", "k": 5},
                                                              {"queries": ["天气预报", "weather forecast"], "k": 3}],
                                                 "oneOf": exactly_one("query", "queries")})


class SideExplain(BaseModel):
    score: float
    rank: int
    terms: list[str] | None = None


class HitExplain(BaseModel):
    dense: SideExplain | None
    lexical: SideExplain | None


class PassageHit(BaseModel):
    start: int = Field(description="The passage is the hit's text[start:end], in code points (as Python counts "
                       "characters; in JavaScript slice Array.from(text), whose strings count UTF-16 units).")
    end: int
    score: float


class Hit(BaseModel):
    id: str
    score: float = Field(description="dense: cosine; lexical: BM25; hybrid: the fused score.")
    text: str
    metadata: dict[str, Any]
    passages: list[PassageHit] | None = Field(None, description="Collections with passages only: the document's "
                                              "best matching passages (up to 3), best first.")
    explain: HitExplain | None = Field(None, description="Only with explain: true.")


class QueryResult(BaseModel):
    query: str
    hits: list[Hit]


class SearchResponse(BaseModel):
    results: list[QueryResult]
    version: str
    warnings: list[str] = Field(description="Filter keys no document has, and values of a type no document has "
                                "for their key (most likely a typo or a quoted number); the search still answered.")


DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=VISIBLE)]
#: A document's text: at most 65,535 bytes in UTF-8 (checked as bytes; the schema can state characters).
DocumentText = Annotated[str, StringConstraints(min_length=1, max_length=65_535, pattern=VISIBLE)]


class DocumentIn(Strict):
    id: DocumentId
    text: DocumentText
    metadata: dict[str, Any] | None = Field(None, description="Any JSON object, at most 64 KiB as JSON.")


class UpsertRequest(Strict):
    __chunked__ = {"documents": DocumentIn}

    documents: list[DocumentIn] = Field(min_length=1, description="New ids are added, existing ids replaced; "
                                        "at most WHITEVEC_MAX_UPSERT per call.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"documents": [
        {"id": "faq-3", "text": "Passwords expire after 90 days.", "metadata": {"lang": "en"}}]}]})


class DeleteRequest(Strict):
    ids: list[DocumentId] = Field(min_length=1, max_length=100_000, description="Document ids to delete.")


class AutoIn(Strict):
    pairs: NonEmpty | None = Field(None, description="A sentence1<TAB>sentence2<TAB>score file in the import folder: "
                                   "the labelled pairs (β, γ, dim) are chosen on.")
    max_dim: int | None = Field(None, ge=1, description="Largest dim to consider; null: the model's.")
    tolerance: float = Field(0.3, ge=0, le=100, description="Take the smallest dim whose Spearman (×100) is "
                             "within this of the best.")
    seed: int = Field(0, ge=0, le=2**31, description="Which half of the pairs chooses and which reports.")


class WhiteningIn(Strict):
    beta: float | None = Field(None, ge=0, le=1, description="Mean removal; null: the server default.")
    gamma: float | None = Field(None, ge=0, le=1, description="Variance equalisation; null: the server default.")
    dim: int | None = Field(None, ge=1, description="Kept dims; null: the server default.")
    auto: AutoIn | None = Field(None, description="Choose β, γ and dim from labelled pairs instead: every (β, γ) "
                                "in {0, .25, .5, .75, 1}² and a ladder of dims, chosen on one half of the pairs, "
                                "reported on the other; raw vectors are a candidate too.")

    @model_validator(mode="after")
    def _auto_alone(self) -> "WhiteningIn":
        if self.auto is not None:
            if any(v is not None for v in (self.beta, self.gamma, self.dim)):
                raise ValueError("give either `auto` or beta/gamma/dim: auto chooses all three")
            if self.auto.pairs is None:
                raise ValueError("auto needs `pairs`: a file of sentence1<TAB>sentence2<TAB>score lines in the "
                                 "import folder; without labelled pairs there is nothing to score, and whitevec "
                                 "does not guess")
        return self


class IndexIn(Strict):
    type: Literal["flat", "ivf", "hnsw"] | None = Field(None, description="null: the server default.")
    nlist: int | None = Field(None, ge=1)
    nprobe: int | None = Field(None, ge=1)
    m: int | None = Field(None, ge=1)
    ef_construction: int | None = Field(None, ge=1)
    ef_search: int | None = Field(None, ge=1)


class RebuildRequest(Strict):
    __chunked__ = {"documents": DocumentIn}  # validated item by item when the body is large (service/body.py)

    documents: list[DocumentIn] | None = Field(None, min_length=2, description="At least 2 (whitening needs "
                                               "variance); ids unique.")
    path: NonEmpty | None = Field(None, description="A JSONL file of documents inside the data dir's import folder.")
    whitening: WhiteningIn | None = None
    index: IndexIn | None = None
    mode: Literal["replace", "merge"] = Field(
        "replace", description="replace: the documents become the whole corpus; merge: they are added to the "
        "served corpus, replacing documents with the same id (the whole corpus is re-encoded).")
    confirm_shrink: bool = Field(False, description="Allow a `replace` that leaves fewer than half of the served "
                                 "documents (refused with 409 otherwise).")
    reencode: bool = Field(True, description="false: no documents and no model run; refit whitening and/or "
                           "rebuild the index of the served corpus from the version's stored raw vectors.")
    search: SearchTuneIn | None = Field(None, description='{"auto": {"pairs": FILE}}: tune the default search '
                                        "mode on labelled pairs (beside whitening auto, if asked).")

    @model_validator(mode="after")
    def _one_of(self) -> "RebuildRequest":
        if not self.reencode:
            if self.documents is not None or self.path is not None:
                raise ValueError("reencode: false re-whitens the served corpus from its stored vectors; send no "
                                 "`documents` or `path` with it")
            return self
        if (self.documents is None) == (self.path is None):
            raise ValueError("give exactly one of `documents` (a list) or `path` (a file in the import folder)")
        return self

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "documents": [{"id": "faq-1", "text": "Reset your password from the login page.", "metadata": {"lang": "en"}},
                      {"id": "faq-2", "text": "登录页面可以重置密码。"}],
        "whitening": {"beta": 0, "gamma": 0}, "index": {"type": "flat"}}], "oneOf": [
            *({**one, "properties": {**one["properties"], "reencode": {"const": True}}}  # documents or path: reencode
              for one in exactly_one("documents", "path")), {
            "required": ["reencode"], "properties": {"reencode": {"const": False}, "documents": {"type": "null"},
                                                     "path": {"type": "null"}}}]})


class JobAccepted(BaseModel):
    job_id: str
