"""The FastAPI app factory: lifespan opens the data dir, loads the collections and runs the batcher, job
runner and sync thread; middleware for body limits and request metrics; the operations routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from whitevec.index.spec import INDEX_TYPES
from whitevec.models.errors import WhitevecError

from . import admin_routes, console_routes, errors, routes
from ..engine import health
from ..engine.access import Pass
from .body import install_openapi
from .deps import get_runtime
from .errors import Forbidden, NotReady, PayloadTooLarge, ServerError, Unauthorized, responses
from .openai_compat import router as openai_router
from ..engine.runtime import Runtime
from ..engine.settings import Settings

log = logging.getLogger("whitevec")

VERSION = "0.1.0"


class BodyLimit:
    """413 for bodies over the limit: at once by Content-Length, or, for a chunked body, counted as the route
    reads it, so a route refuses a caller (401, 404) before reading any of it, as it does a sized body."""

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
        size = 0

        async def counted():
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise too_large  # in the route's body read: answered by the ApiError handler
            return message

        return await self.app(scope, counted, send)

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


ops = APIRouter(tags=["operations"])


@ops.get("/healthz")
async def healthz() -> dict:
    """The process is alive (it may still be loading)."""
    return {"status": "ok"}


def _pass_of(request: Request, rt: Runtime) -> Pass:
    """The pass of the request's bearer token on the open operations routes: an empty one (it sees nothing)
    when there is none or it is not a known credential."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if rt.gate.open:
        return Pass(admin=bool(token) and rt.gate.is_admin(token), reads_all=True)
    if not token:
        return Pass()
    try:
        return rt.gate.identify(token, "")
    except Unauthorized:
        return Pass()


@ops.get("/readyz", responses=responses(NotReady))
async def readyz(request: Request, rt: Runtime = Depends(get_runtime)) -> dict:
    """200 once /embed can be answered (every collection loaded or failed), with what the collection
    `default` serves and, under `collections`, each collection's state — once access keys exist, only
    for the admin token (tenants must not learn other collections' names); 503 while loading or if
    the encoder stopped."""
    health.check_ready(rt)
    return await asyncio.to_thread(health.ready_report, rt, _pass_of(request, rt))


@ops.get("/metrics", response_class=PlainTextResponse, responses=responses(Unauthorized, Forbidden))
async def metrics(request: Request, rt: Runtime = Depends(get_runtime)) -> Response:
    """Prometheus text format. Series are labelled by collection, so once access keys exist (tenants) only the
    admin token reads it (Prometheus: `authorization: {credentials: <admin token>}` in the scrape config)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    admin = scheme.lower() == "bearer" and rt.gate.is_admin(token.strip())
    if not health.sees_names(rt, Pass(admin=admin)):
        if not request.headers.get("authorization"):
            rt.metrics.auth_failures.labels("missing").inc()
            raise Unauthorized("/metrics names every collection: send `Authorization: Bearer <admin token>`")
        rt.gate.identify(token.strip(), "/metrics names every collection: the token sent is wrong or revoked; send "
                                        "the admin token")  # no valid credential: 401
        rt.metrics.auth_failures.labels("not_admin").inc()
        raise Forbidden("/metrics names every collection: only the admin token reads it once access keys exist")
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
            runtime.start_sync()  # collections, versions and keys that other replicas change
            try:
                yield
            finally:
                await asyncio.to_thread(runtime.stop_sync)
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
    for router in (routes.data, routes.admin, admin_routes.router, routes.named_data, routes.named_admin, ops,
                   openai_router):
        app.include_router(router)
    app.include_router(console_routes.router)
    return app
