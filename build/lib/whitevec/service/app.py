"""The FastAPI app factory: lifespan loads the bundle and runs the batcher and job runner."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from whitevec.index.documents import check_documents, parse_document, read_jsonl, resolve_import_path
from whitevec.index.faiss_index import INDEX_TYPES
from whitevec.models.errors import WhitevecError
from whitevec.models.evaluation import read_pairs
from whitevec.models.training import TrainConfig, classes_from_examples, classes_from_pairs, read_training_file

from . import errors
from .deps import check_texts, encode, get_runtime, require_admin, require_api_key
from .errors import (Conflict, Forbidden, InvalidRequest, NotFound, NotReady, Overloaded, PayloadTooLarge,
                     Unauthorized, responses)
from .jobs import JobNotCancellable, UnknownJob
from .openai_compat import router as openai_router
from .runtime import Runtime
from .schemas import (EmbedRequest, EmbedResponse, JobAccepted, JobOut, RebuildRequest, SearchRequest,
                      SearchResponse, TrainAccepted, TrainRequest)
from .settings import Settings

log = logging.getLogger("whitevec")


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
    async def _reject(exc: PayloadTooLarge, scope, receive, send) -> None:
        response = errors.error_response(exc.status, exc.type, exc.message)
        await response(scope, receive, send)


ENCODE_ERRORS = (InvalidRequest, NotReady, Overloaded)

data = APIRouter(tags=["data"], dependencies=[Depends(require_api_key)])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
ops = APIRouter(tags=["operations"])


@data.post("/embed", response_model=EmbedResponse, responses=responses(*ENCODE_ERRORS))
async def embed(req: EmbedRequest, rt: Runtime = Depends(get_runtime)) -> Response:
    """Vectors for texts: pooled, whitened with the active version's fit, normalised."""
    check_texts(rt, req.texts, "texts")
    bundle = rt.require_bundle()
    out_dim = bundle.pipeline.output_dim(req.whiten, req.dim)
    raw = await encode(rt, bundle, req.texts)
    vectors = bundle.pipeline.postprocess(raw.vectors, req.whiten, req.dim, req.normalize)
    return JSONResponse({
        "model": bundle.encoder.identity.name, "dim": out_dim, "embeddings": vectors.tolist(),
        "truncated": raw.truncated, "whitened": req.whiten and bundle.pipeline.whitening is not None,
        "version": bundle.version,
    })


@data.post("/search", response_model=SearchResponse, responses=responses(*ENCODE_ERRORS, Conflict))
async def search(req: SearchRequest, rt: Runtime = Depends(get_runtime)) -> Response:
    """Nearest documents by cosine for one query or several; results in query order."""
    queries = [req.query] if req.query is not None else list(req.queries or [])
    check_texts(rt, queries, "queries")
    if req.k > rt.settings.max_k:
        raise InvalidRequest(f"k={req.k} is above the limit of {rt.settings.max_k} (WHITEVEC_MAX_K)", param="k")
    bundle = rt.require_bundle()
    if bundle.index is None or bundle.store is None:
        raise Conflict("no index has been built yet: POST /admin/index/rebuild with documents, "
                       "or run `whitevec index build FILE.jsonl`")
    raw = await encode(rt, bundle, queries)
    vectors = bundle.pipeline.postprocess(raw.vectors)
    scores, ids = await asyncio.to_thread(bundle.index.search, vectors, req.k)
    docs = await asyncio.to_thread(bundle.store.get, sorted({int(i) for i in ids.ravel() if i >= 0}))
    results = []
    for query, row_scores, row_ids in zip(queries, scores, ids):
        hits = [{"id": docs[int(i)].id, "score": float(s), "text": docs[int(i)].text,
                 "metadata": docs[int(i)].metadata} for s, i in zip(row_scores, row_ids) if i >= 0]
        results.append({"query": query, "hits": hits})
    return JSONResponse({"results": results, "version": bundle.version})


@admin.post("/index/rebuild", status_code=202, response_model=JobAccepted,
            responses=responses(Unauthorized, Forbidden, InvalidRequest, NotReady, PayloadTooLarge))
async def rebuild(req: RebuildRequest, rt: Runtime = Depends(get_runtime)) -> Response:
    """Start a job that encodes the documents, fits whitening, builds the index and swaps it in."""
    bundle = rt.require_bundle()
    if req.path is not None:
        path = resolve_import_path(rt.settings.import_dir, req.path)
        documents = await asyncio.to_thread(read_jsonl, path)
    else:
        documents = [parse_document(d.model_dump(), f"documents[{i}]") for i, d in enumerate(req.documents or [])]
    check_documents(documents, rt.settings.max_documents)
    w = req.whitening
    params = rt.whitening_params(w.beta if w else None, w.gamma if w else None, w.dim if w else None)
    if params.dim is not None and params.dim > bundle.encoder.dim:
        raise InvalidRequest(f"whitening dim {params.dim} is above the model's {bundle.encoder.dim} dims",
                             param="whitening.dim")
    try:
        spec = rt.index_spec(req.index.model_dump() if req.index else None)
        spec.resolved(len(documents))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="index") from exc
    encoder = bundle.encoder
    job_id = rt.jobs.submit("index.rebuild", lambda ctx: rt.rebuild(ctx, documents, params, spec, encoder),
                            total=len(documents))
    return JSONResponse({"job_id": job_id}, status_code=202)


@admin.post("/train", status_code=202, response_model=TrainAccepted,
            responses=responses(Unauthorized, Forbidden, InvalidRequest, NotReady, PayloadTooLarge))
async def train(req: TrainRequest, rt: Runtime = Depends(get_runtime)) -> Response:
    """Start an AM-Softmax fine-tuning job in a separate process; `activate` swaps in the new model
    with a re-encoded corpus, refitted whitening and a rebuilt index, as one version."""
    bundle = rt.require_bundle()
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
    if req.activate and bundle.index is None:
        raise InvalidRequest("activate needs an index to re-encode: build one first (POST /admin/index/rebuild), "
                             "or set activate to false", param="activate")
    fields = req.model_dump(include=set(TrainConfig.__dataclass_fields__))
    config = TrainConfig(**fields)
    spec = rt.training_spec(asdict(config), examples, pairs, req.pair_threshold, eval_path, req.name)
    if Path(spec["out_dir"]).exists():
        raise InvalidRequest(f"model folder {spec['out_dir']} already exists; choose another `name`", param="name")
    job_id = rt.jobs.submit("train", lambda ctx: rt.train(ctx, spec, req.activate))
    return JSONResponse({"job_id": job_id, "classes": data.n_classes, "texts": len(data.texts),
                         "warnings": data.warnings}, status_code=202)


def job_or_404(rt: Runtime, job_id: str) -> dict:
    try:
        return rt.jobs.get(job_id)
    except UnknownJob:
        raise NotFound(f"no job with id {job_id!r}; GET /admin/jobs lists them") from None


@admin.get("/jobs", response_model=list[JobOut], responses=responses(Unauthorized, Forbidden))
async def list_jobs(rt: Runtime = Depends(get_runtime)) -> list[dict]:
    """The latest 100 jobs, newest first."""
    return rt.jobs.list()


@admin.get("/jobs/{job_id}", response_model=JobOut, responses=responses(Unauthorized, Forbidden, NotFound))
async def get_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    return job_or_404(rt, job_id)


@admin.post("/jobs/{job_id}/cancel", response_model=JobOut,
            responses=responses(Unauthorized, Forbidden, NotFound, Conflict))
async def cancel_job(job_id: str, rt: Runtime = Depends(get_runtime)) -> dict:
    """Ask a queued or running job to stop; it ends `cancelled` and the served version is untouched."""
    job_or_404(rt, job_id)
    try:
        return rt.jobs.cancel(job_id)
    except JobNotCancellable as exc:
        raise Conflict(str(exc)) from exc


@ops.get("/healthz")
async def healthz() -> dict:
    """The process is alive (it may still be loading)."""
    return {"status": "ok"}


@ops.get("/readyz", responses=responses(NotReady))
async def readyz(rt: Runtime = Depends(get_runtime)) -> dict:
    """200 once /embed can be answered; what is served."""
    bundle = rt.require_bundle()
    enc, index, w = bundle.encoder, bundle.index, bundle.pipeline.whitening
    return {
        "status": "ready",
        "model": enc.identity.name,
        "model_dir": str(enc.model_dir),
        "pooling": enc.pooling.mode,
        "tokenizer": enc.tokenizer.kind,
        "encoder_device": str(enc.device),
        "dim": bundle.pipeline.output_dim(),
        "model_dim": enc.dim,
        "version": bundle.version,
        "whitening": None if w is None else {"version": w.version, **w.params.to_dict()},
        "limits": {"max_texts": rt.settings.max_texts, "max_text_chars": rt.settings.max_text_chars,
                   "max_k": rt.settings.max_k, "max_body_bytes": rt.settings.max_body_bytes},
        "index": {
            "loaded": index is not None,
            "type": index.spec.type if index else None,
            "device": index.device if index else None,
            "count": index.count if index else 0,
        },
    }


@ops.get("/metrics", response_class=PlainTextResponse)
async def metrics(rt: Runtime = Depends(get_runtime)) -> Response:
    """Prometheus text format."""
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.index_type not in INDEX_TYPES:
        raise WhitevecError(f"WHITEVEC_INDEX_TYPE={settings.index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.jobs.start()
        await runtime.batcher.start()
        if runtime.admin_token_generated:
            log.warning("no WHITEVEC_ADMIN_TOKEN set; generated admin token: %s", runtime.admin_token)
        loading = asyncio.create_task(asyncio.to_thread(runtime.load))  # /healthz answers meanwhile
        try:
            yield
        finally:
            try:
                await loading
            except Exception:  # already logged and reported by /readyz
                pass
            await runtime.batcher.stop()
            await asyncio.to_thread(runtime.jobs.stop)

    app = FastAPI(title="whitevec", version="0.1.0", lifespan=lifespan,
                  description="Sentence embeddings with tunable whitening, and FAISS search over them.")
    app.state.runtime = runtime
    errors.install(app)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        runtime.metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        runtime.metrics.latency.labels(path, request.method).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for router in (data, admin, ops, openai_router):
        app.include_router(router)
    return app
