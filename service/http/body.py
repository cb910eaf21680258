"""JSON request bodies: content type checked, parsed and validated in one pass by pydantic,
off the event loop when large.

FastAPI's own body handling parses with `json.loads` on the event loop (a deep document is
a RecursionError) and validates the objects after, all on the event loop. Here pydantic's Rust
parser validates small bodies straight from the bytes, with a recursion limit. A body above
LARGE_BODY goes to a worker thread; since pydantic holds the GIL for a whole validation call (2 s
for 60 MB of documents), the long lists a model names in `__chunked__` are validated one item at
a time there, so the event loop gets the GIL between items, and each raw item is dropped once
validated, so the raw and the validated copies of a list are never both whole in memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from whitevec.index.documents import MAX_METADATA_INT
from whitevec.index.filters import MAX_KEY_CHARS, MAX_KEYS, MAX_LIST
from whitevec.index.naming import RULES

from .access import api_bearer
from .errors import (
    ClientClosedRequest,
    InvalidRequest,
    MalformedBody,
    UnsupportedMediaType,
    validation_message,
)
from ..engine.settings import Settings

M = TypeVar("M", bound=BaseModel)

#: Bodies larger than this are parsed in a worker thread.
LARGE_BODY = 256 * 1024

_REGISTERED: dict[str, type[BaseModel]] = {}


class FastJSONResponse(JSONResponse):
    """Responses written by orjson, numpy arrays included: a 32 × 384 float32 /embed answer takes
    0.6 ms instead of 12.7 ms through `tolist()` + `json` (the same float32 values once parsed).
    Anything orjson refuses (an integer beyond 64 bits in a document's metadata) falls back to json."""

    def render(self, content: object) -> bytes:
        return render_json(content)


class RenderedJSON(Response):
    """An answer already rendered (by `render_json`, in the batcher's output thread)."""

    media_type = "application/json"


def render_json(content: object) -> bytes:
    try:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"),
                          default=lambda o: o.tolist()).encode()


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def json_body(model: type[M], optional: bool = False) -> Callable[[Request], Awaitable[M]]:
    """A dependency that returns the validated body; declare it in OpenAPI with `body_openapi(model)`.
    `optional`: a request with no body at all means `{}` (every field of `model` has a default)."""

    async def parse(request: Request) -> M:
        return await read_json(request, model, optional)

    return parse


async def read_json(request: Request, model: type[M], optional: bool = False) -> M:
    """The request's body validated as `model` (what `json_body` hands a route, called directly)."""
    content_type = request.headers.get("content-type")
    if optional and not content_type and not await _body(request):
        return model()
    if not is_json(content_type):
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise UnsupportedMediaType(f"the body must be JSON: send it with `Content-Type: application/json` "
                                   f"(this request had {got})")
    body = await _body(request)
    if len(body) > LARGE_BODY:
        return await asyncio.to_thread(_validate_large, model, body)
    return _validate(model.model_validate_json, body)


async def _body(request: Request) -> bytes:
    """The whole body; a client that hangs up before sending it is a 499 (its own doing), not a server error."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientClosedRequest("the client closed the connection before its request body arrived") from None


def _validate(fn: Callable, data: object, prefix: tuple = ()) -> M:
    try:
        return fn(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            err["loc"] = (*prefix, *err.get("loc", ()))
        status, message, param = validation_message(errors)
        raise (MalformedBody if status == 400 else InvalidRequest)(message, param=param) from None


def _validate_large(model: type[M], body: bytes) -> M:
    """Validate a large body in a worker thread, item by item for the model's `__chunked__` lists."""
    try:
        data = pydantic_core.from_json(body)
    except ValueError as exc:
        _validate(model.model_validate_json, body)  # the same 400 message as a small body's
        raise MalformedBody(f"request body is not valid JSON: {exc}") from None  # pragma: no cover
    chunked: dict[str, list] = {}
    if isinstance(data, dict):
        for name, item_model in getattr(model, "__chunked__", {}).items():
            items = data.get(name)
            if isinstance(items, list) and len(items) > 1:
                validated = []
                for i, item in enumerate(items):
                    validated.append(_validate(item_model.model_validate_json, pydantic_core.to_json(item),
                                               (name, i)))
                    items[i] = None  # drop the raw item now that its validated copy exists
                chunked[name] = validated
                # the rest of the body is checked with two items (a list's declared minimum is 1 or 2)
                data[name] = [v.model_dump(mode="json") for v in validated[:2]]
    result = _validate(model.model_validate_json, pydantic_core.to_json(data))
    for name, validated in chunked.items():
        object.__setattr__(result, name, validated)  # the items were validated above, one by one
    return result


def body_openapi(model: type[BaseModel], required: bool = True) -> dict:
    """`openapi_extra=` for a route whose body is read by `json_body(model)` (`required=False` with
    `json_body(model, optional=True)`)."""
    _REGISTERED[model.__name__] = model
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _limit(node: dict, **constraints: object) -> None:
    """Set constraints on a schema node, or on its non-null anyOf branch of the matching kind."""
    kind = "array" if {"maxItems", "minItems"} & constraints.keys() else None
    branches = node.get("anyOf", [node])
    for branch in branches:
        if branch.get("type") == "null":
            continue
        if kind == "array" and branch.get("type") != "array":
            continue
        if "maxLength" in constraints and branch.get("type") == "array":
            branch = branch["items"]
        if "maximum" in constraints and branch.get("type") not in ("integer", "number"):
            continue
        branch.update(constraints)


def _apply_limits(components: dict, settings: Settings) -> None:
    """The server's own limits (WHITEVEC_MAX_*) in the published schemas, so clients see them."""
    s = settings
    props = {name: components[name]["properties"] for name in ("EmbedRequest", "SearchRequest",
                                                               "EmbeddingsRequest", "RebuildRequest")
             if name in components}
    if "EmbedRequest" in props:
        _limit(props["EmbedRequest"]["texts"], maxItems=s.max_texts)
        _limit(props["EmbedRequest"]["texts"], maxLength=s.max_text_chars)
    if "SearchRequest" in props:
        search = props["SearchRequest"]
        _limit(search["query"], maxLength=s.max_text_chars)
        _limit(search["queries"], maxItems=s.max_texts)
        _limit(search["queries"], maxLength=s.max_text_chars)
        _limit(search["k"], maximum=s.max_k)
        _limit(search["nprobe"], maximum=s.max_nprobe)
        _limit(search["ef_search"], maximum=s.max_ef_search)
    if "EmbeddingsRequest" in props:
        _limit(props["EmbeddingsRequest"]["input"], maxItems=s.max_texts)
        for branch in props["EmbeddingsRequest"]["input"].get("anyOf", []):
            target = branch["items"] if branch.get("type") == "array" else branch
            target["maxLength"] = s.max_text_chars
    if "RebuildRequest" in props:
        _limit(props["RebuildRequest"]["documents"], maxItems=s.max_documents)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


#: Largest magnitude a filter number may have (the filter engines compare floats).
_FLOAT_MAX = 1.7976931348623157e308


def _rules() -> dict[str, dict]:
    """The value model and the filter language as JSON Schema: what index/documents.py and
    index/filters.py accept, so that no request the published schema calls valid is refused (422)."""
    number = {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX}
    scalar = {"anyOf": [{"type": "string"}, {"type": "boolean"}, {"type": "null"}, number]}
    values = {"type": "array", "maxItems": MAX_LIST, "items": _ref("FilterScalar")}
    return {
        "MetadataValue": {"description": "A metadata value: integers within 64 bits, no NaN or infinity.", "anyOf": [
            {"type": "string"}, {"type": "boolean"}, {"type": "null"},
            {"type": "integer", "minimum": -MAX_METADATA_INT, "maximum": MAX_METADATA_INT},
            {"type": "number", "not": {"type": "integer"}},
            {"type": "array", "items": _ref("MetadataValue")},
            {"type": "object", "additionalProperties": _ref("MetadataValue")}]},
        "FilterScalar": scalar,
        "FilterCondition": {"anyOf": [_ref("FilterScalar"), {
            "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"$eq": _ref("FilterScalar"), "$ne": _ref("FilterScalar"), "$in": values, "$nin": values,
                           "$gt": number, "$gte": number, "$lt": number, "$lte": number,
                           "$exists": {"type": "boolean"}}}]},
        "Filter": {"type": "object", "maxProperties": MAX_KEYS, "additionalProperties": _ref("FilterCondition"),
                   "propertyNames": {"minLength": 1, "maxLength": MAX_KEY_CHARS,
                                     "pattern": r'^[^"\\\u0000-\u001f\u007f]+$'}},
    }


def _non_null(node: dict, replacement: dict) -> None:
    """Replace the non-null branch of an optional field's anyOf (keeping null, default and description)."""
    node["anyOf"] = [replacement if branch.get("type") != "null" else branch for branch in node["anyOf"]]


def _apply_rules(schema: dict, components: dict) -> None:
    """Checks the models make in code (validators, the value model, the filter parser), said in the schema."""
    components.update(_rules())
    if "DocumentIn" in components:
        _non_null(components["DocumentIn"]["properties"]["metadata"],
                  {"type": "object", "additionalProperties": _ref("MetadataValue")})
    if "SearchRequest" in components:
        _non_null(components["SearchRequest"]["properties"]["filter"], _ref("Filter"))
    if "AutoIn" in components:  # auto whitening is chosen on labelled pairs: `pairs` is required, not null
        auto = components["AutoIn"]
        pairs = next(b for b in auto["properties"]["pairs"]["anyOf"] if b.get("type") == "string")
        auto["properties"]["pairs"] = {**{k: v for k, v in auto["properties"]["pairs"].items()
                                          if k not in ("anyOf", "default")}, **pairs}
        auto["required"] = sorted({*auto.get("required", []), "pairs"})
    if "TrainRequest" in components:  # whitening "auto" tunes the activation on eval_path's pairs
        components["TrainRequest"]["if"] = {"properties": {"whitening": {"const": "auto"}}, "required": ["whitening"]}
        components["TrainRequest"]["then"] = {"properties": {"activate": {"const": True},
                                                             "eval_path": {"type": "string"}},
                                              "required": ["activate", "eval_path"]}
    for path in schema.get("paths", {}).values():  # collection names as naming.check takes them
        for op in path.values():
            for param in op.get("parameters", []) if isinstance(op, dict) else []:
                if param.get("in") == "path" and param.get("name") == "name":
                    param["schema"] = {**param.get("schema", {}), "pattern": f"^{RULES['collection'].pattern.pattern}$"}


def _optional_scheme(schema: dict, name: str) -> None:
    """Declare scheme `name` as optional where it is declared (its requirement, or none): an open server
    takes requests without it, and Swagger's Authorize still sends it to every data route."""
    for path in schema.get("paths", {}).values():
        for op in path.values():
            if isinstance(op, dict) and any(name in req for req in op.get("security", [])) and {} not in op["security"]:
                op["security"].append({})


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Add the schemas of bodies read by json_body to the app's OpenAPI components, with the
    server's limits; the data routes' bearer declared optional (WHITEVEC_READ_ACCESS decides when it is needed)."""
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
        _apply_limits(components, settings)
        _apply_rules(schema, components)
        schemes = schema["components"].setdefault("securitySchemes", {})  # routes declaring READ_SECURITY name it
        schemes.setdefault(api_bearer.scheme_name, jsonable_encoder(api_bearer.model, by_alias=True, exclude_none=True))
        _optional_scheme(schema, api_bearer.scheme_name)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
