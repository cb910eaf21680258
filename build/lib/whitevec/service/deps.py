"""Request dependencies shared by the routers: the runtime, auth, limits, encoding through the batcher."""

from __future__ import annotations

import hmac

from fastapi import Header, Request

from whitevec.index.versions import Bundle
from whitevec.models.encoder import EncodeResult

from .batcher import QueueFull
from .errors import Forbidden, InvalidRequest, Overloaded, Unauthorized
from .runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def check_texts(rt: Runtime, texts: list[str], field: str) -> None:
    s = rt.settings
    if len(texts) > s.max_texts:
        raise InvalidRequest(f"{len(texts)} {field} exceed the limit of {s.max_texts} per request "
                             "(WHITEVEC_MAX_TEXTS); split them into several requests", param=field)
    for i, text in enumerate(texts):
        if len(text) > s.max_text_chars:
            raise InvalidRequest(f"{field}[{i}] has {len(text)} characters, above the limit of {s.max_text_chars} "
                                 "(WHITEVEC_MAX_TEXT_CHARS)", param=field)


async def encode(rt: Runtime, bundle: Bundle, texts: list[str]) -> EncodeResult:
    try:
        return await rt.batcher.encode(bundle.encoder, texts)
    except QueueFull as exc:
        raise Overloaded(f"{exc}; retry after a moment", headers={"Retry-After": "1"}) from exc


def _check_bearer(authorization: str | None, token: str, what: str, variable: str) -> None:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized(f"{what} need `Authorization: Bearer <{variable}>`")
    if not hmac.compare_digest(authorization[7:].encode(), token.encode()):
        raise Forbidden(f"the {variable} is wrong")


def require_admin(request: Request, authorization: str | None = Header(None)) -> None:
    """Admin endpoints need the admin token (generated and printed at start when none is set)."""
    _check_bearer(authorization, get_runtime(request).admin_token, "admin endpoints", "admin token")


def require_api_key(request: Request, authorization: str | None = Header(None)) -> None:
    """When WHITEVEC_API_KEY is set, data endpoints (/embed, /search, /v1/*) need it."""
    key = get_runtime(request).settings.api_key
    if key is not None:
        _check_bearer(authorization, key.get_secret_value(), "these endpoints", "WHITEVEC_API_KEY")
