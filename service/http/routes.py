"""The corpus routes, each written once over a collection and mounted twice: at the paths from before
collections (acting on `default`) and under /collections/{name} and /admin/collections/{name}."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from whitevec.index import filters, hybrid
from whitevec.index.bundle import Bundle
from whitevec.index.hybrid import Fusion
from whitevec.index.passage_rows import Grouping
from whitevec.index.documents import check_documents, parse_document, read_jsonl, resolve_import_path
from whitevec.models.encoder import EncodeResult
from whitevec.models.errors import WhitevecError
from whitevec.models.evaluation import read_pairs
from whitevec.models.tuning import AutoWhitening, check_pairs

from . import errors
from .access import (ADMIN, ADMIN_NAMED, READ_SECURITY, WRITE, WRITE_LEASED, WRITE_LEASED_NAMED, WRITE_NAMED, Target,
                     lease, readable)
from .body import M, FastJSONResponse, RenderedJSON, body_openapi, json_body, read_json, render_json
from ..engine.collection import Collection
from .deps import check_texts, encode, get_runtime
from .errors import COMMON, Conflict, Forbidden, NotFound, Overloaded, Unauthorized, responses
from ..engine.corpus_changes import Encoded
from ..engine.jobs import JobContext
from ..engine.runtime import Runtime
from ..engine.search_tuning import AutoSearch, check_auto_search
from .schemas import (DeleteRequest, EmbedRequest, EmbedResponse, JobAccepted, RebuildRequest, SearchRequest,
                      SearchResponse, UpsertRequest)

ENCODE_ERRORS = (*COMMON, Overloaded, Conflict, Unauthorized, Forbidden, NotFound)
ADMIN_ERRORS = (*COMMON, Unauthorized, Forbidden, NotFound)

data = APIRouter(tags=["data"])
admin = APIRouter(prefix="/admin", tags=["admin"])
named_data = APIRouter(prefix="/collections/{name}", tags=["collections"])
named_admin = APIRouter(prefix="/admin/collections/{name}", tags=["collections"])


# -- implementations ------------------------------------------------------------------------------------
async def _read(request: Request, name: str, model: type[M],
                answer: Callable[[Request, M, Runtime, Target], Awaitable[Response]]) -> Response:
    """A data-plane read of collection `name`: the caller checked (401/404) before the body is read, the bundle
    leased once it is in, then `answer`."""
    col = readable(request, name)
    req = await read_json(request, model)
    with lease(col) as t:
        return await answer(request, req, request.app.state.runtime, t)


async def _embed(request: Request, req: EmbedRequest, rt: Runtime, t: Target) -> Response:
    await check_texts(rt, req.texts, "texts")
    bundle = t.bundle
    out_dim = bundle.pipeline.output_dim(req.whiten, req.dim)

    def answer(raw: EncodeResult) -> bytes:  # in the batcher's output thread
        vectors = bundle.pipeline.postprocess(raw.vectors, req.whiten, req.dim, req.normalize)
        return render_json({
            "model": bundle.encoder.identity.name, "dim": out_dim, "embeddings": vectors.astype(np.float32),
            "truncated": raw.truncated, "whitened": req.whiten and bundle.pipeline.whitening is not None,
            "version": bundle.version,
        })
    return RenderedJSON(await encode(rt, bundle, req.texts, request, answer))


async def _search(request: Request, req: SearchRequest, rt: Runtime, t: Target) -> Response:
    queries = [req.query] if req.query is not None else list(req.queries or [])
    await check_texts(rt, queries, "query" if req.query is not None else "queries", single=req.query is not None)
    if req.k > rt.settings.max_k:
        raise errors.InvalidRequest(f"k={req.k} is above the limit of {rt.settings.max_k} (WHITEVEC_MAX_K)",
                                    param="k")
    bundle = t.bundle
    retriever = bundle.retriever
    if retriever is None:
        raise Conflict(t.col.reports.no_index_message())
    params = retriever.search_params(req.nprobe, req.ef_search, rt.settings.max_nprobe, rt.settings.max_ef_search)
    default = (bundle.manifest or {}).get("search") or t.col.defaults.search()  # a tuned version's, else the collection's
    mode = req.mode or default["mode"]
    given = req.fusion.model_dump() if req.fusion is not None else default.get("fusion")
    fusion = Fusion(**given) if given else Fusion()
    fell_back = []
    if req.mode is None and mode != "dense" and not retriever.has_lexical:  # a default this version cannot serve
        mode = "dense"
        fell_back.append(f"the collection searches {default['mode']} by default, but version {bundle.version} keeps "
                         "no lexical index (built before hybrid search, or on a backend without one): searched "
                         "dense; rebuild to search as the collection's default")
    if (mode != "dense" or req.explain) and not retriever.has_lexical:  # asked for: before any encoding
        raise hybrid.no_lexical()
    vectors = (await encode(rt, bundle, queries, request, lambda raw: bundle.pipeline.postprocess(raw.vectors))
               if mode != "lexical" or req.explain else None)
    where = req.where()
    bundle.layout.check_filter(where)
    found, said = await bundle.layout.search(retriever, mode, queries, vectors, req.k, params, where, fusion,
                                             req.explain, Grouping(req.group, req.mean_top))
    said = fell_back + said
    if where is not None:
        types = bundle.layout.visible_types(await asyncio.to_thread(retriever.metadata_types))
        said += filters.warnings(where, types, t.col.name)
    results = [{"query": query, "hits": [{"id": h.document.id, "score": h.score, "text": h.document.text,
                                          "metadata": h.document.metadata,
                                          **({"passages": h.passages} if h.passages is not None else {}),
                                          **({"explain": h.explain()} if req.explain else {})} for h in hits]}
               for query, hits in zip(queries, found)]
    return FastJSONResponse({"results": results, "version": bundle.version, "warnings": said})


async def _rebuild(req: RebuildRequest, rt: Runtime, t: Target) -> Response:
    col, bundle, ops = t.col, t.bundle, t.col.corpus_builds

    async def submit(fn, total: int) -> Response:
        job_id = await asyncio.to_thread(rt.jobs.submit, "index.rebuild", fn, total=total, collection=col.name)
        return JSONResponse({"job_id": job_id}, status_code=202)

    # a merge without `whitening` adds to what is served: it keeps the served whitening (auto-tuned included),
    # refitted on the merged corpus, rather than falling back to the collection's default
    keep_served = req.reencode and req.mode == "merge" and req.whitening is None and bundle.pipeline.whitening is not None
    auto = None if keep_served else await asyncio.to_thread(_auto, rt, col, req)
    auto_search = await asyncio.to_thread(_auto_search, rt, req)
    if not req.reencode:
        if bundle.retriever is None:
            raise Conflict(col.reports.no_index_message())
        if auto is not None:
            spec = ops.index_spec(req.index.model_dump() if req.index else bundle.retriever.spec.to_dict(),
                                  bundle.retriever.count())
            col.corpus_changes.check_raw_vectors(bundle)
            defaults = ops.whitening_params(None, None, None)
            return await submit(lambda ctx: ops.rewhiten(ctx, defaults, spec, auto=auto, auto_search=auto_search),
                                bundle.retriever.count())
        given = req.whitening.model_dump(exclude_unset=True) if req.whitening else {}
        merged = {**_served_whitening(bundle), **given}  # what the request leaves out stays as the served version has it
        params = ops.whitening_params(merged.get("beta"), merged.get("gamma"), merged.get("dim"))
        ops.check_whitening_dim(params, bundle.encoder)
        count = bundle.retriever.count()
        spec = ops.index_spec(req.index.model_dump() if req.index else bundle.retriever.spec.to_dict(), count)
        col.corpus_changes.check_raw_vectors(bundle)
        source = "the served version's, with the request's fields over it" if given else \
            f"kept from the served version {bundle.version}"
        return await submit(lambda ctx: {**ops.rewhiten(ctx, params, spec, auto_search=auto_search),
                                         "whitening_from": source}, count)
    if req.path is not None:
        path = resolve_import_path(rt.settings.import_dir, req.path)
        documents = await asyncio.to_thread(read_jsonl, path)
    else:  # a worker thread: for 100k+ documents this loop would stall the event loop for seconds
        documents = await asyncio.to_thread(lambda: [parse_document(d.model_dump(), f"documents[{i}]")
                                                     for i, d in enumerate(req.documents or [])])
    await asyncio.to_thread(check_documents, documents, rt.settings.max_documents)
    await asyncio.to_thread(ops.check_for_build, documents, bundle.encoder)
    served = bundle.layout.count(bundle.retriever) if bundle.retriever is not None else 0
    if req.mode == "replace" and not req.confirm_shrink and len(documents) < served / 2:
        raise Conflict(f"this rebuild would replace the {served} served documents with {len(documents)}, fewer than "
                       "half: send \"confirm_shrink\": true to do that, or \"mode\": \"merge\" to add them to "
                       "the corpus")
    w = req.whitening if auto is None else None
    if keep_served:
        kept = _served_whitening(bundle)
        params = ops.whitening_params(kept.get("beta"), kept.get("gamma"), kept.get("dim"))
        source = (f"kept from the served version {bundle.version} (beta {params.beta}, gamma {params.gamma}, dim "
                  f"{params.dim}): a merge without `whitening` keeps what is served; send `whitening` to change it")
    else:
        params = ops.whitening_params(w.beta if w else None, w.gamma if w else None, w.dim if w else None)
        source = ("tuned on labelled pairs (auto)" if auto is not None else "the request's, over the collection's "
                  "defaults" if w is not None else "the collection's default (a replace starts from it)")
    ops.check_whitening_dim(params, bundle.encoder)
    total = len(documents) + (served if req.mode == "merge" else 0)
    spec = ops.index_spec(req.index.model_dump() if req.index else None, total)
    if req.mode == "merge":
        def merge(ctx: JobContext) -> dict:
            corpus, since = ops.merged(documents)
            return {**ops.rebuild(ctx, corpus, params, spec, since=since, auto=auto, auto_search=auto_search),
                    "whitening_from": source}

        return await submit(merge, total)
    return await submit(lambda ctx: {**ops.rebuild(ctx, documents, params, spec, auto=auto, auto_search=auto_search),
                                     "whitening_from": source}, len(documents))


def _served_whitening(bundle: Bundle) -> dict:
    """The served version's (beta, gamma, dim): the dim asked for, not one a rank-deficient fit lowered for
    gamma > 0 (a later gamma 0 restores it); {} without a fitted whitening."""
    now = bundle.pipeline.whitening.params if bundle.pipeline.whitening is not None else None
    return {**({k: getattr(now, k) for k in ("beta", "gamma", "dim")} if now else {}), **bundle.requested_whitening()}


def _auto_search(rt: Runtime, req: RebuildRequest) -> AutoSearch | None:
    """Auto search asked by the request; its pairs file must be in the import folder and usable now."""
    if req.search is None:
        return None
    label = req.search.auto.pairs
    path = resolve_import_path(rt.settings.import_dir, label)
    try:
        check_auto_search(path, label)
    except ValueError as exc:
        raise errors.InvalidRequest(f"search.auto.pairs: {exc}", param="search.auto.pairs") from None
    except WhitevecError as exc:
        raise type(exc)(f"search.auto.pairs: {exc}") from None
    return AutoSearch(str(path), label, req.search.auto.seed)


def _auto(rt: Runtime, col: Collection, req: RebuildRequest) -> AutoWhitening | None:
    """Auto whitening asked by the request, or by the collection's defaults when the request gives no
    whitening; its pairs file must be in the import folder and readable now (not when the job runs)."""
    if req.whitening is not None:
        asked = req.whitening.auto.model_dump() if req.whitening.auto is not None else None
        source = "whitening.auto.pairs"
    else:
        asked = col.defaults.whitening().get("auto")
        source = f"collection {col.name}'s default whitening.auto.pairs (set when it was created)"
    if not asked:
        return None
    try:
        path = resolve_import_path(rt.settings.import_dir, asked["pairs"])
        pairs = read_pairs(path)  # a file that is not pairs is a 422 now, naming the line
        check_pairs(pairs.scores, pairs.a, pairs.b, asked["pairs"])
    except WhitevecError as exc:
        raise type(exc)(f"{source}: {exc}") from None
    return AutoWhitening(str(path), asked["pairs"], asked.get("max_dim"), asked.get("tolerance", 0.3),
                         asked.get("seed", 0))


async def _upsert(req: UpsertRequest, rt: Runtime, col: Collection) -> dict:
    if len(req.documents) > rt.settings.max_upsert:
        raise errors.InvalidRequest(f"{len(req.documents)} documents exceed WHITEVEC_MAX_UPSERT "
                                    f"({rt.settings.max_upsert}) per call; send them in several calls or rebuild "
                                    "with \"mode\": \"merge\"", param="documents")
    parsed = [parse_document(d.model_dump(), f"documents[{i}]") for i, d in enumerate(req.documents)]
    documents = list({d.id: d for d in parsed}.values())  # one id twice in a call: the last one wins, as in order
    with col.served.lease() as bundle:  # encoded through the batcher: the writer thread only commits
        await asyncio.to_thread(col.corpus_changes.check_change, bundle, documents, [])
        rows = await asyncio.to_thread(bundle.layout.rows, documents)  # a document's passages, or itself
        raw = await rt.batcher.encode_for_write(bundle.encoder, [d.text for d in rows])
    done = await asyncio.wrap_future(rt.writer.submit(col.corpus_changes.commit_change, documents, [],
                                                      Encoded(bundle.encoder, bundle.layout.setting, rows, raw)))
    return {"upserted": done["upserted"], "version": done["version"]}


async def _delete(req: DeleteRequest, rt: Runtime, col: Collection) -> dict:
    done = await asyncio.wrap_future(rt.writer.submit(col.corpus_changes.change_documents, [], req.ids))
    return {"deleted": done["deleted"], "missing": done["missing"], "version": done["version"]}


async def _get_document(doc_id: str, t: Target) -> Response:
    bundle = t.bundle
    if bundle.retriever is None:
        raise Conflict(t.col.reports.no_index_message())
    found = await asyncio.to_thread(bundle.layout.get, bundle.retriever, doc_id)
    if found is None:
        raise NotFound(f"no document with id {doc_id!r} in version {bundle.version}")
    doc, spans = found
    return FastJSONResponse({"id": doc.id, "text": doc.text, "metadata": doc.metadata,
                             **({"passages": [{"start": p.start, "end": p.end} for p in spans]}
                                if spans is not None else {}), "version": bundle.version})


async def _versions(col: Collection) -> dict:
    return {"active": col.versions.active(), "versions": await asyncio.to_thread(col.reports.versions_report)}


async def _activate(version: str, col: Collection) -> dict:
    try:
        bundle = await asyncio.to_thread(col.activate_existing, version)
    except KeyError:
        listing = "/admin/versions" if col.name == "default" else f"/admin/collections/{col.name}/versions"
        raise NotFound(f"no version {version!r} is kept in collection {col.name}; GET {listing} lists them") from None
    except WhitevecError as exc:
        raise Conflict(f"version {version} cannot be served: {exc}") from exc
    return {"active": bundle.version, "documents": bundle.layout.count(bundle.retriever) if bundle.retriever else 0}


# -- the routes from before collections: the collection `default` -----------------------------------------
EMBED_DOC = "Vectors for texts: pooled, whitened with the active version's fit, normalised."
SEARCH_DOC = "Nearest documents by cosine for one query or several; results in query order."
REBUILD_DOC = """Start a job that encodes the documents, fits whitening, builds the index and swaps it in.

The model is the one served when the job runs (a training job queued before it with
`activate` changes it), never the one served at submit time."""
UPSERT_DOC = """Add or replace documents: encoded with the served model, transformed with its whitening (no
refit), committed to the served version's change log before the answer (durable); search sees them as
soon as this returns. An id sent twice in one call is written once, as its last occurrence."""
DELETE_DOC = """Delete documents by id, committed to the served version's change log before the answer (no
ghost hits); unknown ids are listed in `missing`."""
ACTIVATE_DOC = """Serve a kept version again, atomically: it is loaded and verified first; a damaged one is a
409 and changes nothing. Rolls back (or forward) the model, whitening and index together."""


@data.post("/embed", response_model=EmbedResponse, openapi_extra=body_openapi(EmbedRequest) | READ_SECURITY,
           responses=responses(*ENCODE_ERRORS), description=EMBED_DOC)
async def embed(request: Request) -> Response:
    return await _read(request, "default", EmbedRequest, _embed)


@data.post("/search", response_model=SearchResponse, openapi_extra=body_openapi(SearchRequest) | READ_SECURITY,
           responses=responses(*ENCODE_ERRORS), description=SEARCH_DOC)
async def search(request: Request) -> Response:
    return await _read(request, "default", SearchRequest, _search)


@admin.post("/index/rebuild", status_code=202, response_model=JobAccepted, openapi_extra=body_openapi(RebuildRequest),
            responses=responses(*ADMIN_ERRORS, Conflict), description=REBUILD_DOC)
async def rebuild(col: Collection = Depends(ADMIN),
                  req: RebuildRequest = Depends(json_body(RebuildRequest)), rt: Runtime = Depends(get_runtime)) -> Response:
    with lease(col) as t:  # leased once the body is in: a slow upload holds no swapped-out bundle
        return await _rebuild(req, rt, t)


@admin.post("/documents", openapi_extra=body_openapi(UpsertRequest), responses=responses(*ADMIN_ERRORS, Conflict),
            description=UPSERT_DOC)
async def upsert_documents(col: Collection = Depends(WRITE),
                           req: UpsertRequest = Depends(json_body(UpsertRequest)),
                           rt: Runtime = Depends(get_runtime)) -> dict:
    return await _upsert(req, rt, col)


@admin.post("/documents/delete", openapi_extra=body_openapi(DeleteRequest),
            responses=responses(*ADMIN_ERRORS, Conflict), description=DELETE_DOC)
async def delete_documents(col: Collection = Depends(WRITE),
                           req: DeleteRequest = Depends(json_body(DeleteRequest)),
                           rt: Runtime = Depends(get_runtime)) -> dict:
    return await _delete(req, rt, col)


@admin.get("/documents/{doc_id:path}", responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def get_document(doc_id: str, t: Target = Depends(WRITE_LEASED)) -> Response:
    """One document of the served version: id, text, metadata."""
    return await _get_document(doc_id, t)


@admin.get("/versions", responses=responses(Unauthorized, Forbidden))
async def list_versions(col: Collection = Depends(ADMIN)) -> dict:
    """Every kept version, newest first, with which is active (the pointer) and served (loaded here)."""
    return await _versions(col)


@admin.post("/versions/{version}/activate", responses=responses(Unauthorized, Forbidden, NotFound, Conflict),
            description=ACTIVATE_DOC)
async def activate_version(version: str, col: Collection = Depends(ADMIN)) -> dict:
    return await _activate(version, col)


# -- the same, per collection -----------------------------------------------------------------------------
@named_data.post("/embed", response_model=EmbedResponse, openapi_extra=body_openapi(EmbedRequest) | READ_SECURITY,
                 responses=responses(*ENCODE_ERRORS), description=EMBED_DOC + " In this collection's whitened space.")
async def collection_embed(request: Request, name: str) -> Response:
    return await _read(request, name, EmbedRequest, _embed)


@named_data.post("/search", response_model=SearchResponse, openapi_extra=body_openapi(SearchRequest) | READ_SECURITY,
                 responses=responses(*ENCODE_ERRORS), description=SEARCH_DOC)
async def collection_search(request: Request, name: str) -> Response:
    return await _read(request, name, SearchRequest, _search)


@named_admin.post("/rebuild", status_code=202, response_model=JobAccepted, openapi_extra=body_openapi(RebuildRequest),
                  responses=responses(*ADMIN_ERRORS, Conflict), description=REBUILD_DOC)
async def collection_rebuild(col: Collection = Depends(ADMIN_NAMED),
                             req: RebuildRequest = Depends(json_body(RebuildRequest)),
                             rt: Runtime = Depends(get_runtime)) -> Response:
    with lease(col) as t:
        return await _rebuild(req, rt, t)


@named_admin.post("/documents", openapi_extra=body_openapi(UpsertRequest),
                  responses=responses(*ADMIN_ERRORS, Conflict), description=UPSERT_DOC)
async def collection_upsert(col: Collection = Depends(WRITE_NAMED),
                            req: UpsertRequest = Depends(json_body(UpsertRequest)),
                            rt: Runtime = Depends(get_runtime)) -> dict:
    return await _upsert(req, rt, col)


@named_admin.post("/documents/delete", openapi_extra=body_openapi(DeleteRequest),
                  responses=responses(*ADMIN_ERRORS, Conflict), description=DELETE_DOC)
async def collection_delete_documents(col: Collection = Depends(WRITE_NAMED),
                                      req: DeleteRequest = Depends(json_body(DeleteRequest)),
                                      rt: Runtime = Depends(get_runtime)) -> dict:
    return await _delete(req, rt, col)


@named_admin.get("/documents/{doc_id:path}", responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def collection_get_document(doc_id: str, t: Target = Depends(WRITE_LEASED_NAMED)) -> Response:
    """One document of the collection's served version: id, text, metadata."""
    return await _get_document(doc_id, t)


@named_admin.get("/versions", responses=responses(Unauthorized, Forbidden, NotFound))
async def collection_versions(col: Collection = Depends(ADMIN_NAMED)) -> dict:
    """The collection's kept versions, newest first, with which is active and served."""
    return await _versions(col)


@named_admin.post("/versions/{version}/activate", responses=responses(Unauthorized, Forbidden, NotFound, Conflict),
                  description=ACTIVATE_DOC)
async def collection_activate(version: str, col: Collection = Depends(ADMIN_NAMED)) -> dict:
    return await _activate(version, col)
