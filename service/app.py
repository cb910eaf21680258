"""The FastAPI app factory: lifespan loads the bundle and runs the batcher and job runner."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from whitevec.index.documents import (check_documents, parse_document, read_jsonl,
                                      resolve_import_path)
from whitevec.index.faiss_index import INDEX_TYPES
from whitevec.index.versions import Bundle
from whitevec.models.encoder import EncodeResult
from whitevec.models.errors import WhitevecError
from whitevec.models.evaluation import read_pairs
from whitevec.models.training import TrainConfig, classes_from_examples, classes_from_pairs, read_training_file

from . import errors
from .body import FastJSONResponse, RenderedJSON, body_openapi, install_openapi, json_body, render_json
from .deps import check_texts, encode, get_runtime, require_admin, require_api_key, served_bundle
from .errors import (COMMON, Conflict, Forbidden, NotFound, NotReady, Overloaded, PayloadTooLarge, ServerError,
                     Unauthorized, responses)
from .jobs import JobContext, JobNotCancellable, UnknownJob
from .openai_compat import router as openai_router
from .runtime import Runtime
from .schemas import (DeleteRequest, EmbedRequest, EmbedResponse, JobAccepted, JobOut, RebuildRequest, SearchRequest,
                      SearchResponse, TrainAccepted, TrainRequest, UpsertRequest)
from .settings import Settings

log = logging.getLogger("whitevec")

VERSION = "0.1.0"


class BodyLimit:
    """413 for bodies over the limit, by Content-Length or by counting a chunked body."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes "
                                    "(WHITEVEC_MAX_BODY_BYTES); split it into smaller requests")
        if length is not None:
            if not length.isdigit():
                bad = errors.MalformedBody(f"Content-Length {length.decode(errors='replace')!r} is not a number")
                return await self._reject(bad, scope, receive, send)
            if int(length) > self.max_bytes:
                return await self._reject(too_large, scope, receive, send)
            return await self.app(scope, receive, send)
        if scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._reject(too_large, scope, receive, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _reject(exc: errors.ApiError, scope, receive, send) -> None:
        response = errors.api_error_response(scope.get("path", ""), exc)
        await response(scope, receive, send)


class Observe:
    """Pure ASGI: request metrics by route and status, and a JSON 500 for anything unexpected.

    No exception escapes as plain text: one that reaches here is logged with its traceback
    and answered in the documented error shape (if the response has not started).
    """

    def __init__(self, app, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, started = 500, False

        async def watch(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                error = ServerError(f"internal error ({type(exc).__name__}); the server log has the details")
                await errors.api_error_response(scope.get("path", ""), error)(scope, receive, watch)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            metrics = self.runtime.metrics
            metrics.requests.labels(path, scope.get("method", ""), str(status)).inc()
            metrics.latency.labels(path, scope.get("method", "")).observe(time.perf_counter() - start)


ENCODE_ERRORS = (*COMMON, Overloaded)

data = APIRouter(tags=["data"], dependencies=[Depends(require_api_key)])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
ops = APIRouter(tags=["operations"])


@data.post("/embed", response_model=EmbedResponse, openapi_extra=body_openapi(EmbedRequest),
           responses=responses(*ENCODE_ERRORS, Conflict, Unauthorized, Forbidden))
async def embed(request: Request, req: EmbedRequest = Depends(json_body(EmbedRequest)),
                rt: Runtime = Depends(get_runtime), bundle: Bundle = Depends(served_bundle)) -> Response:
    """Vectors for texts: pooled, whitened with the active version's fit, normalised."""
    check_texts(rt, req.texts, "texts")
    out_dim = bundle.pipeline.output_dim(req.whiten, req.dim)

    def answer(raw: EncodeResult) -> bytes:  # in the batcher's output thread
        vectors = bundle.pipeline.postprocess(raw.vectors, req.whiten, req.dim, req.normalize)
        return render_json({
            "model": bundle.encoder.identity.name, "dim": out_dim, "embeddings": vectors.astype(np.float32),
            "truncated": raw.truncated, "whitened": req.whiten and bundle.pipeline.whitening is not None,
            "version": bundle.version,
        })
    return RenderedJSON(await encode(rt, bundle, req.texts, request, answer))


@data.post("/search", response_model=SearchResponse, openapi_extra=body_openapi(SearchRequest),
           responses=responses(*ENCODE_ERRORS, Conflict, Unauthorized, Forbidden))
async def search(request: Request, req: SearchRequest = Depends(json_body(SearchRequest)),
                 rt: Runtime = Depends(get_runtime), bundle: Bundle = Depends(served_bundle)) -> Response:
    """Nearest documents by cosine for one query or several; results in query order."""
    queries = [req.query] if req.query is not None else list(req.queries or [])
    check_texts(rt, queries, "queries")
    if req.k > rt.settings.max_k:
        raise errors.InvalidRequest(f"k={req.k} is above the limit of {rt.settings.max_k} (WHITEVEC_MAX_K)",
                                    param="k")
    retriever = bundle.retriever
    if retriever is None:
        raise Conflict(rt.reports.no_index_message())
    params = retriever.search_params(req.nprobe, req.ef_search, rt.settings.max_nprobe, rt.settings.max_ef_search)
    vectors = await encode(rt, bundle, queries, request, lambda raw: bundle.pipeline.postprocess(raw.vectors))
    found = await retriever.search(vectors, req.k, params, req.where())
    results = [{"query": query, "hits": [{"id": h.document.id, "score": h.score, "text": h.document.text,
                                          "metadata": h.document.metadata} for h in hits]}
               for query, hits in zip(queries, found)]
    return FastJSONResponse({"results": results, "version": bundle.version})


ADMIN_ERRORS = (*COMMON, Unauthorized, Forbidden)


@admin.post("/index/rebuild", status_code=202, response_model=JobAccepted, openapi_extra=body_openapi(RebuildRequest),
            responses=responses(*ADMIN_ERRORS, Conflict, NotFound))
async def rebuild(req: RebuildRequest = Depends(json_body(RebuildRequest)),
                  rt: Runtime = Depends(get_runtime), bundle: Bundle = Depends(served_bundle)) -> Response:
    """Start a job that encodes the documents, fits whitening, builds the index and swaps it in.

    The model is the one served when the job runs (a training job queued before it with
    `activate` changes it), never the one served at submit time."""
    if not req.reencode:
        if bundle.retriever is None:
            raise Conflict(rt.reports.no_index_message())
        now = bundle.pipeline.whitening.params if bundle.pipeline.whitening is not None else None
        given = req.whitening.model_dump(exclude_unset=True) if req.whitening else {}
        keep = {k: getattr(now, k) for k in ("beta", "gamma", "dim")} if now else {}
        # the dim asked for, not one a rank-deficient fit lowered for gamma > 0 (a later gamma 0 restores it)
        keep.update(bundle.requested_whitening())
        merged = {**keep, **given}  # what the request leaves out stays as the served version has it
        params = rt.corpus_ops.whitening_params(merged.get("beta"), merged.get("gamma"), merged.get("dim"))
        rt.corpus_ops.check_whitening_dim(params, bundle.encoder)
        count = bundle.retriever.count()
        spec = rt.corpus_ops.index_spec(req.index.model_dump() if req.index else bundle.retriever.spec.to_dict(), count)
        rt.corpus_ops.check_raw_vectors(bundle)
        job_id = await asyncio.to_thread(rt.jobs.submit, "index.rebuild", lambda ctx: rt.corpus_ops.rewhiten(ctx, params, spec),
                                         total=count)
        return JSONResponse({"job_id": job_id}, status_code=202)
    if req.path is not None:
        path = resolve_import_path(rt.settings.import_dir, req.path)
        documents = await asyncio.to_thread(read_jsonl, path)
    else:  # a worker thread: for 100k+ documents this loop would stall the event loop for seconds
        documents = await asyncio.to_thread(lambda: [parse_document(d.model_dump(), f"documents[{i}]")
                                                     for i, d in enumerate(req.documents or [])])
    await asyncio.to_thread(check_documents, documents, rt.settings.max_documents)
    served = bundle.retriever.count() if bundle.retriever is not None else 0
    if req.mode == "replace" and not req.confirm_shrink and len(documents) < served / 2:
        raise Conflict(f"this rebuild would replace the {served} served documents with {len(documents)}, fewer than "
                       "half: send \"confirm_shrink\": true to do that, or \"mode\": \"merge\" to add them to "
                       "the corpus")
    w = req.whitening
    params = rt.corpus_ops.whitening_params(w.beta if w else None, w.gamma if w else None, w.dim if w else None)
    rt.corpus_ops.check_whitening_dim(params, bundle.encoder)
    total = len(documents) + (served if req.mode == "merge" else 0)
    spec = rt.corpus_ops.index_spec(req.index.model_dump() if req.index else None, total)
    if req.mode == "merge":
        def merge(ctx: JobContext) -> dict:
            corpus, since = rt.corpus_ops.merged(documents)
            return rt.corpus_ops.rebuild(ctx, corpus, params, spec, since=since)

        job_id = await asyncio.to_thread(rt.jobs.submit, "index.rebuild", merge, total=total)
    else:
        job_id = await asyncio.to_thread(rt.jobs.submit, "index.rebuild",
                                         lambda ctx: rt.corpus_ops.rebuild(ctx, documents, params, spec), total=len(documents))
    return JSONResponse({"job_id": job_id}, status_code=202)


@admin.post("/train", status_code=202, response_model=TrainAccepted, openapi_extra=body_openapi(TrainRequest),
            responses=responses(*ADMIN_ERRORS, NotFound))
async def train(req: TrainRequest = Depends(json_body(TrainRequest)), rt: Runtime = Depends(get_runtime),
                bundle: Bundle = Depends(served_bundle)) -> Response:
    """Start an AM-Softmax fine-tuning job in a separate process; `activate` swaps in the new model
    with a re-encoded corpus, refitted whitening and a rebuilt index, as one version."""
    examples = [e.model_dump() for e in req.examples] if req.examples is not None else None
    pairs = [p.model_dump() for p in req.pairs] if req.pairs is not None else None
    if req.path is not None:
        path = resolve_import_path(rt.settings.import_dir, req.path)
        examples, pairs = await asyncio.to_thread(read_training_file, path)
    data = classes_from_examples(examples) if examples is not None else classes_from_pairs(pairs or [], req.pair_threshold)
    eval_path = None
    if req.eval_path is not None:
        eval_path = resolve_import_path(rt.settings.import_dir, req.eval_path)
        await asyncio.to_thread(read_pairs, eval_path)
    if req.activate and bundle.retriever is None:
        raise errors.InvalidRequest("activate needs an index to re-encode: build one first "
                                    "(POST /admin/index/rebuild), or set activate to false", param="activate")
    fields = req.model_dump(include=set(TrainConfig.__dataclass_fields__))
    config = TrainConfig(**fields)
    out_dir = rt.training.model_output_dir(req.name)
    try:
        job_id = await asyncio.to_thread(rt.jobs.submit, "train", lambda ctx: rt.training.train(ctx, rt.training.training_spec(
            asdict(config), examples, pairs, req.pair_threshold, eval_path, out_dir), req.activate),
            on_end=lambda: rt.training.release_model_name(out_dir))
    except BaseException:
        rt.training.release_model_name(out_dir)
        raise
    return JSONResponse({"job_id": job_id, "classes": data.n_classes, "texts": len(data.texts),
                         "warnings": data.warnings, "model_name": out_dir.name}, status_code=202)


def job_or_404(rt: Runtime, job_id: str) -> dict:
    try:
        return rt.jobs.get(job_id)
    except UnknownJob:
        raise NotFound(f"no job with id {job_id!r}; GET /admin/jobs lists them") from None


@admin.post("/documents", openapi_extra=body_openapi(UpsertRequest), responses=responses(*ADMIN_ERRORS, Conflict))
async def upsert_documents(req: UpsertRequest = Depends(json_body(UpsertRequest)),
                           rt: Runtime = Depends(get_runtime)) -> dict:
    """Add or replace documents: encoded with the served model, transformed with its whitening (no
    refit), committed to the served version's change log before the answer (durable); /search sees
    them as soon as this returns. An id sent twice in one call is written once, as its last occurrence."""
    if len(req.documents) > rt.settings.max_upsert:
        raise errors.InvalidRequest(f"{len(req.documents)} documents exceed WHITEVEC_MAX_UPSERT "
                                    f"({rt.settings.max_upsert}) per call; send them in several calls or use "
                                    "POST /admin/index/rebuild with \"mode\": \"merge\"", param="documents")
    parsed = [parse_document(d.model_dump(), f"documents[{i}]") for i, d in enumerate(req.documents)]
    documents = list({d.id: d for d in parsed}.values())  # one id twice in a call: the last one wins, as in order
    done = await asyncio.wrap_future(rt.writer.submit(rt.corpus_ops.change_documents, documents, []))
    return {"upserted": done["upserted"], "version": done["version"]}


@admin.post("/documents/delete", openapi_extra=body_openapi(DeleteRequest), responses=responses(*ADMIN_ERRORS, Conflict))
async def delete_documents(req: DeleteRequest = Depends(json_body(DeleteRequest)),
                           rt: Runtime = Depends(get_runtime)) -> dict:
    """Delete documents by id, committed to the served version's change log before the answer (no
    ghost hits); unknown ids are listed in `missing`."""
    done = await asyncio.wrap_future(rt.writer.submit(rt.corpus_ops.change_documents, [], req.ids))
    return {"deleted": done["deleted"], "missing": done["missing"], "version": done["version"]}


@admin.get("/documents/{doc_id:path}", responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def get_document(doc_id: str, rt: Runtime = Depends(get_runtime),
                       bundle: Bundle = Depends(served_bundle)) -> Response:
    """One document of the served version: id, text, metadata."""
    if bundle.retriever is None:
        raise Conflict(rt.reports.no_index_message())
    doc = await asyncio.to_thread(bundle.retriever.get, doc_id)
    if doc is None:
        raise NotFound(f"no document with id {doc_id!r} in version {bundle.version}")
    return FastJSONResponse({"id": doc.id, "text": doc.text, "metadata": doc.metadata, "version": bundle.version})


@admin.get("/versions", responses=responses(Unauthorized, Forbidden))
async def list_versions(rt: Runtime = Depends(get_runtime)) -> dict:
    """Every kept version, newest first, with which is active (the pointer) and served (loaded here)."""
    return {"active": rt.versions.active(), "versions": await asyncio.to_thread(rt.reports.versions_report)}


@admin.post("/versions/{version}/activate", responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def activate_version(version: str, rt: Runtime = Depends(get_runtime)) -> dict:
    """Serve a kept version again, atomically: it is loaded and verified first; a damaged one is a
    409 and changes nothing. Rolls back (or forward) the model, whitening and index together."""
    try:
        bundle = await asyncio.to_thread(rt.activate_existing, version)
    except KeyError:
        raise NotFound(f"no version {version!r} is kept here; GET /admin/versions lists them") from None
    except WhitevecError as exc:
        raise Conflict(f"version {version} cannot be served: {exc}") from exc
    return {"active": bundle.version, "documents": bundle.retriever.count() if bundle.retriever else 0}


@admin.get("/jobs", response_model=list[JobOut], responses=responses(Unauthorized, Forbidden))
async def list_jobs(rt: Runtime = Depends(get_runtime)) -> list[dict]:
    """The latest 100 jobs, newest first."""
    return await asyncio.to_thread(rt.jobs.list)


@admin.get("/jobs/{job_id}", response_model=JobOut, responses=responses(Unauthorized, Forbidden, NotFound))
async def get_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    return await asyncio.to_thread(job_or_404, rt, job_id)


@admin.post("/jobs/{job_id}/cancel", response_model=JobOut,
            responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def cancel_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    """Stop a queued job at once (it ends `cancelled`), or ask a running one to stop; the served
    version is untouched either way."""
    await asyncio.to_thread(job_or_404, rt, job_id)
    try:
        return await asyncio.to_thread(rt.jobs.cancel, job_id)
    except JobNotCancellable as exc:
        raise Conflict(str(exc)) from exc


@ops.get("/healthz")
async def healthz() -> dict:
    """The process is alive (it may still be loading)."""
    return {"status": "ok"}


@ops.get("/readyz", responses=responses(NotReady))
async def readyz(rt: Runtime = Depends(get_runtime)) -> dict:
    """200 once /embed can be answered, with what is served; 503 while loading or if the encoder stopped."""
    rt.require_bundle()
    if not rt.batcher.running:
        raise NotReady(rt.batcher.error or "the encoder is not running", headers={"Retry-After": "5"})
    return await asyncio.to_thread(rt.reports.ready_report)


@ops.get("/metrics", response_class=PlainTextResponse)
async def metrics(rt: Runtime = Depends(get_runtime)) -> Response:
    """Prometheus text format."""
    return Response(await asyncio.to_thread(rt.metrics.render), media_type="text/plain; version=0.0.4")


def _install_docs(app: FastAPI) -> None:
    """Swagger UI from the swagger-ui-bundle package: /docs works with no network."""
    import swagger_ui_bundle

    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="whitevec — API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="data:,")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.index_type not in INDEX_TYPES:
        raise WhitevecError(f"WHITEVEC_INDEX_TYPE={settings.index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.lock()  # one process per data dir: refuses with a clear message otherwise
        try:
            runtime.jobs.start(activated=runtime.was_activated)
            await runtime.batcher.start()
            runtime.announce_token()
            loading = asyncio.create_task(asyncio.to_thread(runtime.load))  # /healthz answers meanwhile
            runtime.follower.start()  # milvus backend: versions other replicas activate
            try:
                yield
            finally:
                await asyncio.to_thread(runtime.follower.stop)
                try:
                    await loading
                except Exception:  # already logged and reported by /readyz
                    pass
                await runtime.batcher.stop()
                await asyncio.to_thread(runtime.jobs.stop)
        finally:
            runtime.unlock()

    app = FastAPI(title="whitevec", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Sentence embeddings with tunable whitening, and FAISS search over them. "
                              "Errors are always `{\"error\": {\"type\", \"message\", \"param\", \"code\"}}`.")
    app.state.runtime = runtime
    errors.install(app)
    install_openapi(app, settings)
    _install_docs(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Observe, runtime=runtime)
    for router in (data, admin, ops, openai_router):
        app.include_router(router)
    return app
