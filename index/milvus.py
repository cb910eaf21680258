"""`MilvusRetriever`: a version's index, documents and changes in one Milvus collection (its naming, alias
and drops are `milvus_target.py`'s).

`WHITEVEC_MILVUS_URI` is a local file path (embedded Milvus Lite, the `milvus-lite` package) or
`http://host:19530` (Milvus standalone or a cluster); `pymilvus` talks to both. Each version's
collection holds the whitened, unit-length vectors (`vector`, searched by inner product), the raw
pooled vectors (`raw`, so re-whitening never re-encodes), the text, the metadata as given, a typed
copy of its scalar values that filters compare (`typed`), and whitevec's words for Milvus's BM25
function (`terms`, with its sparse vectors): `milvus_fields.py` writes those and the filter
expressions. Milvus keeps the sparse vectors in step with every upsert and delete, on every replica
at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

import numpy as np

from . import analyzer
from .filters import Filter, add_types, matches
from .journal import Journal
from .lexical import BM25
from .milvus_fields import MAX_LIMIT, MAX_VARCHAR, milvus_filter, term_token, terms_text, typed
from .retriever import ChangeResult, Hit
from .spec import IndexSpec, SearchParams, check_search_params
from .store import Document, DocumentList, Documents

T = TypeVar("T")
INSERT_BATCH = 1_000
SEARCH_THREADS = 2  # per served version: searches of one version, beside the FAISS backend's own thread


def _index_params(client, spec: IndexSpec, n: int):
    spec = spec.resolved(max(n, 1))
    params = client.prepare_index_params()
    if spec.type == "ivf":
        params.add_index("vector", index_type="IVF_FLAT", metric_type="IP", params={"nlist": spec.nlist})
    elif spec.type == "hnsw":
        params.add_index("vector", index_type="HNSW", metric_type="IP",
                         params={"M": spec.m, "efConstruction": spec.ef_construction})
    else:
        params.add_index("vector", index_type="FLAT", metric_type="IP")
    params.add_index("raw", index_type="FLAT", metric_type="IP")
    return params, spec


class MilvusRetriever:
    """One version's collection; implements index/retriever.py's Retriever."""

    def __init__(self, client, collection: str, spec: IndexSpec, dim: int, raw_dim: int,
                 transform: Callable[[np.ndarray], np.ndarray], journal: Journal | None = None,
                 terms: bool = False, searchable: bool = False, unserved: Callable[[], bool] | None = None) -> None:
        """`terms`: the collection has the BM25 `terms` field (every write fills it); `searchable`: its words
        were cut by today's analyzer, so lexical queries meet them; `unserved`: whether no replica serves this
        collection any more (checked at close, to release its memory)."""
        self.client, self.collection, self._spec = client, collection, spec
        self.dim, self.raw_dim, self.transform = dim, raw_dim, transform
        self.journal = journal  # the served version's: what carry-over reads (None while building)
        self._terms, self._searchable, self._unserved = terms, terms and searchable, unserved
        self._types: dict[str, set[str]] | None = None  # metadata key → JSON types (filter warnings)
        self._types_lock = threading.Lock()
        # searches run here, not in the default executor: a range filter reads every document having the key
        # (vectors included) and checks it in Python; a few such searches must not starve every to_thread call
        self._searches = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="whitevec-milvus-search")
        client.load_collection(collection)

    @classmethod
    def create(cls, client, collection: str, documents: Documents, raw: np.ndarray, spec: IndexSpec,
               transform: Callable[[np.ndarray], np.ndarray], bm25: BM25 | None = None) -> "MilvusRetriever":
        """A new collection holding `documents` (replaced if a half-written one has that name), with Milvus's
        BM25 function over their words when `bm25` is given."""
        from pymilvus import DataType, Function, FunctionType

        vectors = np.asarray(transform(raw), np.float32)
        if client.has_collection(collection):
            client.drop_collection(collection)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_VARCHAR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        schema.add_field("raw", DataType.FLOAT_VECTOR, dim=raw.shape[1])
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("typed", DataType.JSON)
        params, spec = _index_params(client, spec, len(documents))
        if bm25 is not None:
            schema.add_field("terms", DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
                             analyzer_params={"tokenizer": "standard"})
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                         input_field_names=["terms"], output_field_names=["sparse"]))
            knobs = {"bm25_k1": bm25.k1, "bm25_b": bm25.b}
            # pymilvus sends the knobs as top-level pairs (what Milvus reads); Milvus Lite reads only the older
            # nested "params" pair, which Milvus still accepts: both are sent
            params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                             params={**knobs, "params": knobs})
        client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        retriever = cls(client, collection, spec, vectors.shape[1], raw.shape[1], transform,
                        terms=bm25 is not None, searchable=True)
        retriever._write(documents, raw, vectors)
        return retriever

    def _rows(self, documents: Documents, raw: np.ndarray, vectors: np.ndarray) -> Iterable[list[dict]]:
        docs, start = iter(documents), 0
        while batch := list(islice(docs, INSERT_BATCH)):
            rows = [{"id": d.id, "vector": vectors[i].tolist(), "raw": raw[i].tolist(), "text": d.text,
                     "metadata": d.metadata, "typed": typed(d.metadata)} for i, d in enumerate(batch, start)]
            if self._terms:
                for row in rows:
                    row["terms"] = terms_text(analyzer.analyze(row["text"]))
            yield rows
            start += len(batch)

    def _write(self, documents: Documents, raw: np.ndarray, vectors: np.ndarray) -> None:
        for rows in self._rows(documents, raw, vectors):
            self.client.upsert(self.collection, rows)
        self.client.flush(self.collection)  # durable before the caller answers

    @property
    def spec(self) -> IndexSpec:
        return self._spec

    def count(self, where: Filter | None = None) -> int:
        expr, exact = milvus_filter(where)
        if not exact:  # the expression narrows; whitevec checks what it cannot state
            return sum(matches(d.metadata, where) for d in self._read(expr, "raw", self.raw_dim)[0])
        found = self._loaded(lambda: self.client.query(self.collection, filter=expr, output_fields=["count(*)"]))
        return int(found[0]["count(*)"])

    def pending_changes(self) -> int:
        return 0  # Milvus compacts its own segments

    def refresh(self) -> None:
        """Changes are written into the Milvus collection itself: every holder reads the same."""

    def search_params(self, nprobe: int | None, ef_search: int | None, max_nprobe: int,
                      max_ef_search: int) -> SearchParams:
        return check_search_params(self._spec, nprobe, ef_search, max_nprobe, max_ef_search)

    def _search(self, queries: np.ndarray, k: int, params: SearchParams,
                where: Filter | None) -> list[list[Hit]]:
        queries = np.asarray(queries, np.float32)
        expr, exact = milvus_filter(where)
        if not exact:  # Milvus cannot state the filter: whitevec checks the candidates itself
            return self._exact(queries, k, expr, where)
        p: dict = {}
        if self._spec.type == "ivf":
            p["nprobe"] = params.nprobe or self._spec.nprobe
        elif self._spec.type == "hnsw":
            p["ef"] = max(params.ef_search or self._spec.ef_search or k, k)
        found = self._loaded(lambda: self.client.search(self.collection, data=queries.tolist(), limit=k,
                                                        filter=expr, anns_field="vector",
                                                        search_params={"metric_type": "IP", "params": p},
                                                        output_fields=["text", "metadata"]))
        out = [[Hit(float(h["distance"]), Document(h["id"], h["entity"]["text"], h["entity"]["metadata"] or {}))
                for h in hits] for hits in found]
        short = [i for i, hits in enumerate(out) if len(hits) < k]
        if where and short:  # an approximate filtered pass can come back short: k whenever k match, as FAISS
            matching = int(self.client.query(self.collection, filter=expr, output_fields=["count(*)"])[0]["count(*)"])
            short = [i for i in short if len(out[i]) < min(k, matching)]
            if short:
                for i, hits in zip(short, self._exact(queries[short], k, expr, None)):
                    out[i] = hits
        return out

    def _loaded(self, call: Callable[[], T]) -> T:
        """`call`, loading the collection again if another replica released it (it had moved on to a newer
        version while this one had not followed yet), and trying once more: another of this version's
        searches may have loaded it already, or the release came mid-call. A second failure is the answer."""
        try:
            return call()
        except Exception:
            state = self.client.get_load_state(self.collection).get("state")
            if getattr(state, "name", str(state)) != "Loaded":
                self.client.load_collection(self.collection)
            return call()

    def _exact(self, queries: np.ndarray, k: int, expr: str, check: Filter | None) -> list[list[Hit]]:
        """Brute force over the documents matching `expr` (and `check`, when given), read in batches."""
        docs, vectors = self._read(expr, "vector", self.dim)
        if check is not None:
            keep = [i for i, d in enumerate(docs) if matches(d.metadata, check)]
            docs, vectors = [docs[i] for i in keep], vectors[keep]
        if not docs:
            return [[] for _ in queries]
        scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[Hit(float(scores[q, j]), docs[j]) for j in row] for q, row in enumerate(top)]

    async def search(self, queries: np.ndarray, k: int, params: SearchParams,
                     where: Filter | None = None) -> list[list[Hit]]:
        return await asyncio.get_running_loop().run_in_executor(self._searches, self._search, queries, k, params,
                                                                where)

    def metadata_types(self) -> dict[str, set[str]]:
        """Read from every document once, then kept up to date by this retriever's changes (another
        replica's upserts may add types it does not list: warnings are advice)."""
        with self._types_lock:
            if self._types is None:
                types: dict[str, set[str]] = {}
                iterator = self.client.query_iterator(self.collection, batch_size=INSERT_BATCH, filter="",
                                                      output_fields=["metadata"])
                try:
                    while batch := iterator.next():
                        for row in batch:
                            add_types(types, row["metadata"] or {})
                finally:
                    iterator.close()
                self._types = types
            return {key: set(kinds) for key, kinds in self._types.items()}

    @property
    def has_lexical(self) -> bool:
        return self._searchable

    async def search_lexical(self, terms: list[list[str]], k: int, where: Filter | None = None) -> list[list[Hit]]:
        return await asyncio.get_running_loop().run_in_executor(self._searches, self._search_lexical, terms, k,
                                                                where)

    def _search_lexical(self, terms: list[list[str]], k: int, where: Filter | None) -> list[list[Hit]]:
        """Milvus's BM25 over the queries' distinct words; a filter Milvus cannot state exactly is checked here
        on ever deeper candidate lists until k match or the candidates run out."""
        assert self._searchable, "callers check has_lexical"
        out: list[list[Hit]] = [[] for _ in terms]
        asked = [i for i, t in enumerate(terms) if t]
        if not asked or k < 1:
            return out
        texts = [" ".join(dict.fromkeys(map(term_token, terms[i]))) for i in asked]  # each distinct word once
        expr, exact = milvus_filter(where)
        if exact:
            for i, hits in zip(asked, self._bm25(texts, min(k, MAX_LIMIT), expr)):
                out[i] = hits
            return out
        for i, text in zip(asked, texts):
            limit = min(4 * k, MAX_LIMIT)
            while True:
                found = self._bm25([text], limit, expr)[0]
                out[i] = [h for h in found if matches(h.document.metadata, where)][:k]
                if len(out[i]) >= k or len(found) < limit or limit >= MAX_LIMIT:
                    break
                limit = min(4 * limit, MAX_LIMIT)
        return out

    def _bm25(self, texts: list[str], limit: int, expr: str) -> list[list[Hit]]:
        """Milvus's BM25 hits, best first (ties by id), documents holding a query word only. Milvus Lite gives
        the score negated as a distance, Milvus the score itself: BM25 is never negative, so its size is it."""
        found = self._loaded(lambda: self.client.search(self.collection, data=texts, limit=limit, filter=expr,
                                                        anns_field="sparse", search_params={"metric_type": "BM25"},
                                                        output_fields=["text", "metadata"]))
        out = []
        for hits in found:
            scored = [Hit(abs(float(h["distance"])), Document(h["id"], h["entity"]["text"],
                                                              h["entity"]["metadata"] or {}))
                      for h in hits if h["distance"] != 0]
            out.append(sorted(scored, key=lambda h: (-h.score, h.document.id)))
        return out

    def get(self, doc_id: str) -> Document | None:
        found = self._loaded(lambda: self.client.get(self.collection, ids=[doc_id], output_fields=["text", "metadata"]))
        return Document(found[0]["id"], found[0]["text"], found[0]["metadata"] or {}) if found else None

    def _existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), INSERT_BATCH):
            part = ids[start : start + INSERT_BATCH]
            found |= {r["id"] for r in self.client.get(self.collection, ids=part, output_fields=["id"])}
        return found

    def count_after(self, upsert_ids: list[str], deletes: list[str]) -> int:
        ids = list(dict.fromkeys([*upsert_ids, *deletes]))
        return self.count() - len(self._existing(ids)) + len(set(upsert_ids))

    def change(self, upserts: list[Document], raw: np.ndarray, deletes: list[str]) -> ChangeResult:
        asked = list(dict.fromkeys(deletes))
        present = self._existing(asked)
        missing = [i for i in asked if i not in present]
        if upserts:
            self._write(upserts, raw, np.asarray(self.transform(raw), np.float32))
            with self._types_lock:
                for d in upserts if self._types is not None else ():
                    add_types(self._types, d.metadata)
        if present:
            self.client.delete(self.collection, ids=list(present))
            self.client.flush(self.collection)
        if self.journal is not None:  # after the write: a journaled id is in the collection as changed
            self.journal.record(list(dict.fromkeys([d.id for d in upserts] + [i for i in asked if i in present])))
        return ChangeResult(len(upserts), len(present), missing)

    @property
    def device(self) -> str:
        return "milvus"

    @property
    def has_raw(self) -> bool:
        return True  # every collection stores them

    def stored_raw(self) -> np.ndarray | None:
        return None  # `documents` reads them from the collection

    def change_counts(self) -> dict[str, int]:
        return {}  # changed in place; Milvus compacts its own segments

    def sequence(self) -> int:
        return self.journal.head() if self.journal is not None else 0

    def changed_since(self, seq: int) -> list[str]:
        return self.journal.changed_since(seq) if self.journal is not None else []

    def fetch(self, ids: list[str]) -> tuple[list[Document], np.ndarray | None]:
        docs, raws = [], []
        for start in range(0, len(ids), INSERT_BATCH):
            found = self.client.get(self.collection, ids=ids[start : start + INSERT_BATCH],
                                    output_fields=["text", "metadata", "raw"])
            docs += [Document(r["id"], r["text"], r["metadata"] or {}) for r in found]
            raws += [r["raw"] for r in found]
        return docs, np.asarray(raws, np.float32).reshape(len(docs), self.raw_dim)

    def documents(self, base_raw: np.ndarray | None = None) -> tuple[DocumentList, np.ndarray]:
        """Every document with its raw vector (for a rebuild), read in batches."""
        docs, raw = self._read("", "raw", self.raw_dim)
        return DocumentList(docs), raw

    def _read(self, expr: str, field: str, width: int) -> tuple[list[Document], np.ndarray]:
        """The documents matching `expr` with their `field` vectors, read in batches of INSERT_BATCH."""
        return self._loaded(lambda: self._read_once(expr, field, width))

    def _read_once(self, expr: str, field: str, width: int) -> tuple[list[Document], np.ndarray]:
        docs: list[Document] = []
        vectors: list[list[float]] = []
        iterator = self.client.query_iterator(self.collection, batch_size=INSERT_BATCH, filter=expr,
                                              output_fields=["text", "metadata", field])
        try:
            while batch := iterator.next():
                docs += [Document(r["id"], r["text"], r["metadata"] or {}) for r in batch]
                vectors += [r[field] for r in batch]
        finally:
            iterator.close()
        return docs, np.asarray(vectors, np.float32).reshape(len(docs), width)

    def close(self) -> None:
        """The search threads and the journal's file; the client is shared by every version of this process
        and stays open. The collection is released (its vectors leave Milvus's memory) once no replica serves
        it: the shared alias names another; a replica still on it loads it again when it searches."""
        self._searches.shutdown(wait=True)
        if self.journal is not None:
            self.journal.close()
        if self._unserved is not None and self._unserved():
            try:
                self.client.release_collection(self.collection)
            except Exception:  # noqa: BLE001 - already dropped (a pruned version): nothing is loaded
                pass
