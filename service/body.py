"""JSON request bodies: content type checked, parsed and validated in one pass by pydantic,
off the event loop when large.

FastAPI's own body handling parses with `json.loads` on the event loop (a deep document is
a RecursionError, a 60 MB body ~1 GB of Python objects) and validates the objects after.
Here pydantic's Rust parser validates straight from the bytes, with a recursion limit, and a
body above LARGE_BODY is handled in a worker thread so other requests keep being answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError

from .errors import InvalidRequest, MalformedBody, UnsupportedMediaType, validation_message

M = TypeVar("M", bound=BaseModel)

#: Bodies larger than this are parsed in a worker thread.
LARGE_BODY = 256 * 1024

_REGISTERED: dict[str, type[BaseModel]] = {}


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that returns the validated body; declare it in OpenAPI with `body_openapi(model)`."""

    async def parse(request: Request) -> M:
        content_type = request.headers.get("content-type")
        if not is_json(content_type):
            got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            raise UnsupportedMediaType(f"the body must be JSON: send it with `Content-Type: application/json` "
                                       f"(this request had {got})")
        body = await request.body()
        try:
            if len(body) > LARGE_BODY:
                return await asyncio.to_thread(model.model_validate_json, body)
            return model.model_validate_json(body)
        except ValidationError as exc:
            status, message, param = validation_message(exc.errors(include_url=False))
            raise (MalformedBody if status == 400 else InvalidRequest)(message, param=param) from None

    return parse


def body_openapi(model: type[BaseModel]) -> dict:
    """`openapi_extra=` for a route whose body is read by `json_body(model)`."""
    _REGISTERED[model.__name__] = model
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def install_openapi(app: FastAPI) -> None:
    """Add the schemas of bodies read by json_body to the app's OpenAPI components."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _REGISTERED.items():
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for sub, definition in body.pop("$defs", {}).items():
                components.setdefault(sub, definition)
            components[name] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
