"""Request helpers shared by the routers: the runtime, text limits, encoding through the batcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request
from whitevec.index.bundle import Bundle
from whitevec.models.encoder import EncodeResult
from whitevec.models.tokenizers import has_content

from ..engine.batcher import BatcherStopped, QueueFull
from .errors import ClientClosedRequest, InvalidRequest, NotReady, Overloaded
from ..engine.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:  # async: no thread-pool hop per request
    return request.app.state.runtime


async def check_texts(rt: Runtime, texts: list[str], field: str, single: bool = False) -> None:
    """Limits and text rules shared by /embed, /search and /v1/embeddings. `single`: `field` is one text, not a
    list (errors name it without an index). The content scan of a request over LARGE_TEXTS characters runs in a
    worker thread: texts of format characters are scanned to their end, and the event loop serves others meanwhile."""
    s = rt.settings
    if len(texts) > s.max_texts:
        raise InvalidRequest(f"{len(texts)} {field} exceed the limit of {s.max_texts} per request "
                             "(WHITEVEC_MAX_TEXTS); split them into several requests", param=field)
    for i, text in enumerate(texts):
        if len(text) > s.max_text_chars:
            raise InvalidRequest(f"{_name(field, i, single)} has {len(text)} characters, above the limit of "
                                 f"{s.max_text_chars} (WHITEVEC_MAX_TEXT_CHARS)", param=field)
    if sum(map(len, texts)) > LARGE_TEXTS:
        await asyncio.to_thread(_check_content, texts, field, single)
    else:
        _check_content(texts, field, single)


#: Characters per request above which the content scan leaves the event loop.
LARGE_TEXTS = 100_000


def _check_content(texts: list[str], field: str, single: bool) -> None:
    for i, text in enumerate(texts):
        if not has_content(text):
            raise InvalidRequest(f"{_name(field, i, single)} has no character the model reads (only whitespace, "
                                 "control or format characters such as U+200B): send text with visible characters",
                                 param=field)


def _name(field: str, i: int, single: bool) -> str:
    return field if single else f"{field}[{i}]"


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
