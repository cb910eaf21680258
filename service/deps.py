"""Request dependencies shared by the routers: the runtime, auth, limits, encoding through the batcher."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from whitevec.index.versions import Bundle
from whitevec.models.encoder import EncodeResult

from .batcher import BatcherStopped, QueueFull
from .errors import (
    ClientClosedRequest,
    Forbidden,
    InvalidRequest,
    NotReady,
    Overloaded,
    Unauthorized,
)
from .runtime import Runtime

admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                          description="WHITEVEC_ADMIN_TOKEN (generated and printed at start when unset).")
api_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                        description="WHITEVEC_API_KEY, needed only when the server sets one.")


async def get_runtime(request: Request) -> Runtime:  # async: no thread-pool hop per request
    return request.app.state.runtime


async def served_bundle(request: Request) -> AsyncIterator[Bundle]:
    """The served bundle, leased for the request: a swap meanwhile closes it only after the answer."""
    rt: Runtime = request.app.state.runtime
    with rt.served.lease() as bundle:
        if bundle is None:
            raise NotReady(rt.load_error or "the model is still loading; retry shortly", headers={"Retry-After": "2"})
        yield bundle


def check_texts(rt: Runtime, texts: list[str], field: str) -> None:
    """Limits and text rules shared by /embed, /search and /v1/embeddings."""
    s = rt.settings
    if len(texts) > s.max_texts:
        raise InvalidRequest(f"{len(texts)} {field} exceed the limit of {s.max_texts} per request "
                             "(WHITEVEC_MAX_TEXTS); split them into several requests", param=field)
    for i, text in enumerate(texts):
        if len(text) > s.max_text_chars:
            raise InvalidRequest(f"{field}[{i}] has {len(text)} characters, above the limit of {s.max_text_chars} "
                                 "(WHITEVEC_MAX_TEXT_CHARS)", param=field)


async def _until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def encode(rt: Runtime, bundle: Bundle, texts: list[str], request: Request,
                 post: Callable[[EncodeResult], Any] | None = None) -> Any:
    """Encode through the batcher; a client that goes away first has nothing encoded for it.
    With `post`, returns what post makes of the vectors (run in the batcher's output thread)."""
    work = asyncio.ensure_future(rt.batcher.encode(bundle.encoder, texts, post))
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        raise ClientClosedRequest("the client closed the connection before its vectors were ready")
    try:
        return work.result()
    except QueueFull as exc:
        raise Overloaded(f"{exc}; retry after a moment", headers={"Retry-After": "1"}) from exc
    except BatcherStopped as exc:
        raise NotReady(str(exc), headers={"Retry-After": "5"}) from exc


def _check_bearer(credentials: HTTPAuthorizationCredentials | None, token: str, what: str, variable: str) -> None:
    if credentials is None:
        raise Unauthorized(f"{what} need `Authorization: Bearer <{variable}>`")
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise Forbidden(f"the {variable} is wrong")


async def require_admin(request: Request,
                  credentials: HTTPAuthorizationCredentials | None = Depends(admin_bearer)) -> None:
    """Admin endpoints need the admin token (generated and printed at start when none is set)."""
    _check_bearer(credentials, request.app.state.runtime.admin_token, "admin endpoints", "admin token")


async def require_api_key(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(api_bearer)) -> None:
    """When WHITEVEC_API_KEY is set, data endpoints (/embed, /search, /v1/*) need it."""
    key = request.app.state.runtime.settings.api_key
    if key is not None:
        _check_bearer(credentials, key.get_secret_value(), "these endpoints", "WHITEVEC_API_KEY")
