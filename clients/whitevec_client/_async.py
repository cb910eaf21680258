"""AsyncClient, the asyncio SDK, and AsyncCollection, its handle on one collection: the same methods
as Client and Collection (see their docstrings), awaited.

Generated from _client.py by clients/make_async.py: edit _client.py and run that script."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Sequence, TypeVar, Union, overload

import httpx

from . import _calls as calls
from ._calls import Call, Vectors
from ._core import Core, Routes
from .errors import VersionChanged, WhitevecError
from .types import (Activated, CollectionDeleted, Deleted, Document, Example, Filter, Hits, IndexSpec, Job,
                    Group, KeyRevoked, Pair, Passages, RrfFusion, SearchMode, SearchSetting, SearchTuning, StoredDocument, TrainJob,
                    Upserted, VersionList, WeightedFusion, Whitening)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

T = TypeVar("T")


class _AsyncCorpus:
    """The methods over one collection's routes, sent through `_run` (awaited)."""

    _core: Core
    _routes: Routes

    async def _run(self, call: Call[T]) -> T:
        raise NotImplementedError

    async def _limits(self) -> None:
        if self._core.limits is None:
            self._core.limits = (await self._run(calls.ready(retry=True)))["limits"]

    @overload
    async def embed(self, texts: Sequence[str], dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
                    as_numpy: Literal[False] = False) -> Vectors: ...

    @overload
    async def embed(self, texts: Sequence[str], dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
                    *, as_numpy: Literal[True]) -> NDArray[np.float32]: ...

    @overload
    async def embed(self, texts: Sequence[str], dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
                    as_numpy: bool = False) -> Union[Vectors, NDArray[np.float32]]: ...

    async def embed(self, texts: Sequence[str], dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
                    as_numpy: bool = False) -> Union[Vectors, NDArray[np.float32]]:
        """One vector per text, in input order: list[list[float]], or a float32 array with as_numpy=True
        (needs the `numpy` extra). `dim`: keep the first dims of the whitened space; whiten=False: the
        model's raw pooled vectors. Inputs above the server's limit go in several requests, all answered
        by one version (retried when a rebuild lands in between; VersionChanged if it keeps changing)."""
        if as_numpy:
            calls.require_numpy()
        calls.check_texts(texts)
        await self._limits()
        batch = calls.embed(self._core, self._routes, texts, dim, whiten, normalize)
        attempt = 0
        while True:
            try:
                rows = calls.vectors([await self._run(c) for c in batch])
                return calls.as_array(rows) if as_numpy else rows
            except VersionChanged:
                if attempt >= self._core.retries:
                    raise
                attempt += 1

    @overload  # a str is a Sequence[str] too: this first overload wins
    async def search(  # type: ignore[overload-overlap]
            self, query: str, k: int = 10, filter: Optional[Filter] = None, nprobe: Optional[int] = None,
            ef_search: Optional[int] = None, mode: Optional[SearchMode] = None,
            fusion: Optional[Union[RrfFusion, WeightedFusion]] = None, explain: bool = False, group: Optional[Group] = None, mean_top: Optional[int] = None) -> Hits: ...

    @overload
    async def search(self, query: Sequence[str], k: int = 10, filter: Optional[Filter] = None,
                     nprobe: Optional[int] = None, ef_search: Optional[int] = None, mode: Optional[SearchMode] = None,
                     fusion: Optional[Union[RrfFusion, WeightedFusion]] = None,
                     explain: bool = False, group: Optional[Group] = None, mean_top: Optional[int] = None) -> List[Hits]: ...

    async def search(self, query: Union[str, Sequence[str]], k: int = 10, filter: Optional[Filter] = None,
                     nprobe: Optional[int] = None, ef_search: Optional[int] = None, mode: Optional[SearchMode] = None,
                     fusion: Optional[Union[RrfFusion, WeightedFusion]] = None,
                     explain: bool = False, group: Optional[Group] = None,
                     mean_top: Optional[int] = None) -> Union[Hits, List[Hits]]:
        """The k best documents for `query`, best first: a list of Hit (id, score, text, metadata)
        with `.warnings` and `.version`. `filter`: metadata to match, AND over keys, e.g.
        {"lang": "en", "year": {"$gte": 2020, "$lt": 2024}}; a key or value type no document has is
        named in `.warnings`. `nprobe` (ivf) and `ef_search` (hnsw): recall against speed for this call.
        `mode`: "dense" (nearest vectors, the default), "lexical" (BM25 over words) or "hybrid" (both,
        fused by `fusion`: {"method": "rrf", "k": 60} or {"method": "weighted", "alpha": 0.5});
        explain=True gives each hit `.explain` (each side's score and rank, the matched terms).
        In a collection with passages, hits are k distinct documents, each with `.passages` (its best
        matching passages, text[start:end], best first; `hit.passage_texts()`): `group` "max" (the default:
        a document scores its best passage), "mean_top" (the mean of its best `mean_top`) or "none" (every
        passage its own hit).
        Several queries: use search_many (a list given here still answers list[Hits])."""
        if not isinstance(query, str):
            return await self.search_many(query, k, filter, nprobe, ef_search, mode, fusion, explain, group, mean_top)
        call = calls.search(self._core, self._routes, query, k, filter, nprobe, ef_search, mode, fusion, explain,
                            group, mean_top)[0]
        return (await self._run(call))[0]

    async def search_many(self, queries: Sequence[str], k: int = 10, filter: Optional[Filter] = None,
                          nprobe: Optional[int] = None, ef_search: Optional[int] = None,
                          mode: Optional[SearchMode] = None, fusion: Optional[Union[RrfFusion, WeightedFusion]] = None,
                          explain: bool = False, group: Optional[Group] = None,
                          mean_top: Optional[int] = None) -> List[Hits]:
        """search for several queries: one Hits per query, in query order; more queries than the server
        takes in one request go in several."""
        calls.check_texts(queries, "search_many takes a list of queries; search(query) takes one")
        await self._limits()
        return [hits for c in calls.search(self._core, self._routes, queries, k, filter, nprobe, ef_search, mode,
                                           fusion, explain, group, mean_top)
                for hits in await self._run(c)]

    async def rebuild_index(self, documents: Optional[Sequence[Document]] = None, path: Optional[str] = None,
                            whitening: Optional[Whitening] = None, index: Optional[IndexSpec] = None,
                            mode: Optional[Literal["replace", "merge"]] = None, confirm_shrink: Optional[bool] = None,
                            reencode: Optional[bool] = None, search: Optional[SearchTuning] = None) -> Job:
        """Start a job that encodes the documents, fits whitening, builds the index and serves them as a
        new version; `wait(job)` follows it. `documents=` or `path=` (a JSONL file in the server's import
        folder); mode "merge" adds them to the served corpus instead of replacing it ("replace" leaving
        under half the served documents needs confirm_shrink=True); reencode=False, with no documents,
        refits whitening and/or rebuilds the index from the served version's stored vectors.
        search={"auto": {"pairs": "pairs.tsv"}} chooses the collection's default search mode on labelled pairs
        (the job result's `search_tuning` has the table and the reason)."""
        job_id = await self._run(calls.rebuild(self._routes, documents, path, whitening, index, mode, confirm_shrink,
                                         reencode, search))
        return await self._run(calls.job(job_id))

    async def upsert(self, documents: Sequence[Document]) -> Upserted:
        """Add or replace documents ({"id", "text", "metadata"?}); searchable when this returns. Sent in
        calls of at most 10,000 (the server's WHITEVEC_MAX_UPSERT default); answers the total upserted
        and the version written to."""
        answer: Upserted = {"upserted": 0, "version": None}
        for call in calls.upsert(self._routes, documents):
            done = await self._run(call)
            answer = {"upserted": answer["upserted"] + done["upserted"], "version": done["version"]}
        return answer

    async def delete(self, ids: Sequence[str]) -> Deleted:
        """Delete documents by id → {"deleted", "missing", "version"} (unknown ids are in `missing`)."""
        return await self._run(calls.delete(self._routes, ids))

    async def get_document(self, doc_id: str) -> StoredDocument:
        """{"id", "text", "metadata", "version"} of one served document (NotFound if unknown)."""
        return await self._run(calls.get_document(self._routes, doc_id))

    async def versions(self) -> VersionList:
        """{"active": id, "versions": [...]}: every kept version, newest first."""
        return await self._run(calls.versions(self._routes))

    async def activate(self, version: str) -> Activated:
        """Serve a kept version again (roll back or forward): model, whitening and index together."""
        return await self._run(calls.activate(self._routes, version))


class AsyncCollection(_AsyncCorpus):
    """One collection of a server: `client.collection("faq")`. Shares the client's connection."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self._client, self._core, self._routes, self.name = client, client._core, Routes(name), name

    def __repr__(self) -> str:
        return f"AsyncCollection({self.name!r})"

    async def _run(self, call: Call[T]) -> T:
        return await self._client._run(call)


class AsyncClient(_AsyncCorpus):
    """Asyncio client: `async with AsyncClient(...) as wv: await wv.search(...)`. Retries 429, 502, 503,
    504 and connection errors with backoff, on idempotent calls only. URL and tokens default to
    WHITEVEC_URL, WHITEVEC_API_KEY and WHITEVEC_ADMIN_TOKEN."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 admin_token: Optional[str] = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        self._core = Core(base_url, api_key, admin_token, retries, backoff)
        self._routes = Routes()
        self._http = httpx.AsyncClient(base_url=self._core.base_url, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (`async with AsyncClient(...)` does it)."""
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                r = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                       headers=self._core.headers(call.admin))
            except httpx.TransportError as exc:
                error: WhitevecError = self._core.transport_error(exc)
            else:
                if r.is_success:
                    return call.read(r)
                error = self._core.error_for(r, call.fixes)
            delay = self._core.retry_delay(attempt, error, call.retry)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    # --- collections and keys (admin token) ------------------------------------------------------------

    def collection(self, name: str) -> AsyncCollection:
        """A handle on collection `name`: search, search_many, embed, upsert, delete, get_document,
        rebuild_index, versions, activate (nothing is sent until one of them is called)."""
        return AsyncCollection(self, name)

    async def create_collection(self, name: str, model: Optional[str] = None, whitening: Optional[Whitening] = None,
                                index: Optional[IndexSpec] = None, search: Optional[SearchSetting] = None,
                                passages: Optional[Passages] = None) -> Dict[str, Any]:
        """A new empty collection → {"name", "model", "whitening", "index", "passages", "documents"}. `model`:
        None for the server's, "bundled", or a fine-tune's folder name; `whitening` and `index`: its rebuilds'
        defaults; `search`: how its /search searches without a mode ({"mode": "hybrid"}), and BM25's knobs;
        `passages`: split long documents into passages ({"max_tokens": 128, "overlap": 16}; {} for the
        model's max length), hits grouped per document."""
        return await self._run(calls.create_collection(name, model, whitening, index, search, passages))

    async def set_passages(self, name: str, passages: Optional[Passages]) -> Dict[str, Any]:
        """How collection `name` splits documents from its next rebuild (None: one vector per document) →
        {"name", "passages", "served", "next"}; the rebuild's job result says it split anew."""
        return await self._run(calls.set_passages(name, passages))

    async def get_collection(self, name: str) -> Dict[str, Any]:
        """One collection, with the whitening and index its served version has (or its rebuilds will use)."""
        return await self._run(calls.get_collection(name))

    async def collections(self) -> List[Dict[str, Any]]:
        """Every collection: name, model, documents, active_version, dim, created_at."""
        return await self._run(calls.collections())

    async def delete_collection(self, name: str, confirm: bool = False) -> CollectionDeleted:
        """Delete a collection and its documents; refused (Conflict) unless confirm=True."""
        return await self._run(calls.delete_collection(name, confirm))

    async def create_key(self, collections: Sequence[str], access: Literal["read", "write"] = "read",
                         name: Optional[str] = None) -> Dict[str, Any]:
        """An access key for `collections`: "read" (search, embed) or "write" (also documents) →
        {"id", "key", ...}; the key is in this answer only."""
        return await self._run(calls.create_key(collections, access, name))

    async def keys(self) -> List[Dict[str, Any]]:
        """Every key's id, name, collections, access, created and last-used times (never the key)."""
        return await self._run(calls.keys())

    async def revoke_key(self, key_id: str) -> KeyRevoked:
        """Refuse a key from now on."""
        return await self._run(calls.revoke_key(key_id))

    # --- training and jobs (admin token) ---------------------------------------------------------------

    async def train(self, *, examples: Optional[Sequence[Example]] = None, pairs: Optional[Sequence[Pair]] = None,
                    path: Optional[str] = None, pair_threshold: Optional[float] = None, eval_path: Optional[str] = None,
                    epochs: Optional[int] = None, batch_size: Optional[int] = None, lr: Optional[float] = None,
                    centre_lr: Optional[float] = None, warmup: Optional[float] = None, grad_accum: Optional[int] = None,
                    max_length: Optional[int] = None, seed: Optional[int] = None, max_steps: Optional[int] = None,
                    scale: Optional[float] = None, margin: Optional[float] = None, activate: Optional[bool] = None,
                    name: Optional[str] = None, collection: Optional[str] = None,
                    whitening: Optional[Literal["auto"]] = None) -> TrainJob:
        """Start fine-tuning a collection's model (AM-Softmax); `wait(job)` follows it. Give one of
        `examples` ([{"text", "label"}]), `pairs` ([{"text_a", "text_b", "score"}]) or `path` (a JSONL or
        TSV file in the server's import folder). An argument left None takes the server's default:

        - pair_threshold (default 4.0): pairs scoring at least this are joined into one class
        - eval_path: a pairs file for Spearman before/after
        - epochs (default 3), batch_size (default 32), lr (default 5e-05), centre_lr (default 0.01),
          warmup (default 0.1, a fraction of the steps), grad_accum (default 1), max_length (default 64),
          seed (default 0), max_steps (default None: the epochs decide), scale (default 30.0),
          margin (default 0.35)
        - activate (default False): re-encode the corpus with the new model and serve it as a new version
        - name: the output model's folder name; collection (default "default"): whose model is tuned
        - whitening "auto": tune the activation's (β, γ, dim) on eval_path's pairs

        The answer is the job, with `classes`, `texts` and `warnings` about the data."""
        fields = {k: v for k, v in locals().items() if k != "self"}
        accepted = await self._run(calls.train(fields))
        return calls.train_job(accepted, await self.job(accepted["job_id"]))

    async def job(self, job_id: str) -> Job:
        """One job's state, progress, detail and result."""
        return await self._run(calls.job(job_id))

    async def jobs(self, collection: Optional[str] = None) -> List[Job]:
        """The latest jobs, newest first; of one collection when given."""
        return await self._run(calls.jobs(collection))

    async def cancel(self, job_id: str) -> Job:
        """Stop a queued job at once, or ask a running one to stop; the served version is untouched."""
        return await self._run(calls.cancel(job_id))

    async def job_plot(self, job_id: str, kind: Optional[Literal["whitening", "search"]] = None) -> bytes:
        """An auto-tuning job's PNG: held-out Spearman against dim per (β, γ) (auto whitening), or held-out
        hit@1 against the fusion's alpha (auto search; kind="search" when the job tuned both)."""
        return await self._run(calls.job_plot(job_id, kind))

    async def wait(self, job: Union[Job, str], timeout: Optional[float] = None, progress: bool = True,
                   poll: float = 0.5) -> Job:
        """Poll until the job ends and return it; a tqdm bar when tqdm is installed; JobFailed (with the
        server's reason) if it failed or was cancelled, TimeoutError after `timeout` seconds."""
        current = await self.job(job if isinstance(job, str) else job.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._core.progress_bar(current, progress)
        try:
            while (done := self._core.observe(current, bar, deadline)) is None:
                await asyncio.sleep(poll)
                current = await self.job(current.id)
        finally:  # however it ends (done, failed, timed out, the server gone): the bar is closed
            if bar is not None:
                bar.close()
        return done

    # --- operations --------------------------------------------------------------------------------------

    async def health(self) -> Dict[str, Any]:
        """{"status": "ok"} while the process is alive (it may still be loading)."""
        return await self._run(calls.health())

    async def ready(self) -> Dict[str, Any]:
        """What the server serves (model, version, limits, engine, …) once it can answer; NotReady, at
        once, while it is loading or if its encoder stopped."""
        return await self._run(calls.ready(retry=False))

    async def metrics(self) -> str:
        """The server's Prometheus metrics, as text."""
        return await self._run(calls.metrics())
