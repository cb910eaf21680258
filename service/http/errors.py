"""Named API errors as HTTP answers (the classes and their codes are in engine/errors.py); every error body is
`{"error": {"type", "message", "param", "code"}}` (OpenAI's shape, so /v1 clients read it too).

Routes declare the errors they can answer with `responses(...)`; the handlers below turn
every failure — ours, the framework's (404, 405), validation, and unexpected exceptions —
into that one shape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from whitevec.index.datadir import DataDirLocked
from whitevec.index.documents import ImportFileMissing
from whitevec.index.layout import CollectionExists
from whitevec.index.hybrid import NoLexicalIndex
from whitevec.index.naming import RULES, BadName, shown
from whitevec.index.changes import ChangeLogUnwritable
from whitevec.index.versions import ServedVersionChanged, VersionDamaged
from whitevec.models.errors import DimNotServed, ModelFolderError, WhiteningError, WhitevecError

from ..engine.errors import (
    ApiError,
    ClientClosedRequest,
    Conflict,
    Forbidden,
    InvalidRequest,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    UnsupportedMediaType,
)
from ..engine.database import JobsUnavailable
from .schemas import VISIBLE

log = logging.getLogger(__name__)


#: Errors every data route can answer with, besides its own.
COMMON = (MalformedBody, PayloadTooLarge, UnsupportedMediaType, InvalidRequest, ServerError, NotReady)

#: Errors from the models/index packages, by class: bad input unless the server's own model is broken.
DOMAIN_ERRORS: list[tuple[type[Exception], type[ApiError]]] = [
    (ModelFolderError, ServerError),
    (DimNotServed, Conflict),
    (NoLexicalIndex, Conflict),
    (ImportFileMissing, NotFound),
    (VersionDamaged, ServerError),  # what is on disk is broken: the server's fault, never the request's
    (ChangeLogUnwritable, NotReady),  # writes wait for the operator (permissions, disk space); reads go on
    (DataDirLocked, NotReady),
    (ServedVersionChanged, Conflict),
    (CollectionExists, Conflict),
    (BadName, InvalidRequest),
    (JobsUnavailable, NotReady),
    (WhiteningError, InvalidRequest),
    (WhitevecError, InvalidRequest),
]


class ErrorDetail(BaseModel):
    type: str
    message: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(status: int, type_: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(type=type_, message=message, param=param, code=type_))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def responses(*errors: type[ApiError]) -> dict:
    """OpenAPI `responses=` for a route: the error statuses it declares."""
    out: dict = {}
    for e in errors:
        entry = out.setdefault(e.status, {"model": ErrorBody, "description": ""})
        doc = (e.__doc__ or e.type).strip()
        entry["description"] = f"{entry['description']} {doc}".strip()
    return out


_EXPECTED = {"string_type": "a string", "int_type": "a whole number", "int_from_float": "a whole number",
             "int_parsing": "a whole number", "float_type": "a number", "float_parsing": "a number",
             "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
             "dict_type": "a JSON object", "model_type": "a JSON object", "model_attributes_type": "a JSON object",
             "none_required": "null", "finite_number": "a finite number"}
_TYPE_SENTENCES = {f"must be {what}" for what in _EXPECTED.values()}
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|union|nullable|function-\w+|json-or-python|"
                       r"literal|lax-or-strict|strict|lax|constrained-str)(\[.*\])?$")


def _sentence(err: dict) -> str:
    """One pydantic error as a sentence about the field (no pydantic type names or patterns)."""
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}"
    if kind == "extra_forbidden":
        return "unknown field; remove it (GET /docs lists the fields)"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return "must contain a non-space character" if ctx.get("pattern") == VISIBLE else "has characters that are not allowed"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return f"give at least {n} item{'s' if n != 1 else ''} (got {ctx.get('actual_length')})"
    if kind == "too_long" and "max_length" in ctx:
        return f"give at most {ctx['max_length']} items (got {ctx.get('actual_length')}); split the request"
    bounds = {"greater_than": "above", "greater_than_equal": "at least", "less_than": "below",
              "less_than_equal": "at most"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return f"must be {bounds[kind]} {limit}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err.get("msg", "invalid")))
    return str(err.get("msg", "invalid")).rstrip(".")


def validation_message(errors: Sequence[dict]) -> tuple[int, str, str | None]:
    """(status, message, param) for pydantic errors: 400 when the body is not JSON, else 422 with one
    sentence per field (the alternatives of a union said once, as the types it takes)."""
    fields: dict[str, list[str]] = {}
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = str(err.get("ctx", {}).get("error", err.get("msg")))
            if "hex escape" in detail or "surrogate" in detail:
                detail += " (a lone UTF-16 surrogate such as \\ud800 is not text: send valid Unicode)"
            elif "recursion limit" in detail:
                detail += " (the JSON is nested too deeply)"
            return 400, f"request body is not valid JSON: {detail}", None
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and not _TYPE_TAG.match(str(p))]
        fields.setdefault(".".join(loc) or "body", []).append(_sentence(err))
    # a union's alternatives: when one got deeper into the value (input.1), its complaint is the useful one
    fields = {where: said for where, said in fields.items()
              if not (all(s.startswith("must be ") for s in said) and any(o.startswith(where + ".") for o in fields))}
    parts = []
    for where, said in fields.items():
        said = list(dict.fromkeys(said))
        if any(s not in _TYPE_SENTENCES for s in said):  # a union: the alternative of the value's own type
            said = [s for s in said if s not in _TYPE_SENTENCES]  # said what is wrong; "must be a list" is noise
        expected = [s.removeprefix("must be ") for s in said if s.startswith("must be ")]
        if len(said) > 1 and len(expected) == len(said):
            parts.append(f"{where}: must be {' or '.join(expected)}")
        else:  # a sentence that names its field already (`filter key "year": ...`) is not prefixed again
            parts += [s if s.startswith(f"{where.rsplit('.', 1)[-1]} ") else f"{where}: {s}" for s in said]
    return 422, "; ".join(parts), next(iter(fields), None)


_OPENAI_TYPES = {429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def _name_with_a_slash(request: Request) -> str | None:
    """The collection name a path would carry if `{name}` could hold a '/' (None when no published path
    reads so)."""
    for template in request.app.openapi().get("paths", {}):
        found = "{name}" in template and re.fullmatch(_template_regex(template, slashed_name=True), request.url.path)
        if found:
            return found.group("name")
    return None


def respond(path: str, status: int, type_: str, message: str, param: str | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """Under /v1 errors follow OpenAI: 400 for invalid requests, `type` one of OpenAI's, our type as `code`."""
    if path.startswith("/v1/"):
        body = ErrorBody(error=ErrorDetail(type=_OPENAI_TYPES.get(status, "invalid_request_error"),
                                           message=message, param=param, code=type_))
        status = {422: 400, 403: 401}.get(status, status)  # OpenAI: invalid request 400, bad key 401
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)
    return error_response(status, type_, message, param, headers)


def api_error_response(path: str, exc: ApiError) -> JSONResponse:
    return respond(path, exc.status, exc.type, exc.message, exc.param, exc.headers)


def domain_to_api(exc: WhitevecError) -> ApiError:
    for cls, api in DOMAIN_ERRORS:
        if isinstance(exc, cls):
            return api(str(exc), param=exc.param)
    return InvalidRequest(str(exc), param=exc.param)  # pragma: no cover - WhitevecError is the last entry


def allowed_methods(request: Request) -> list[str]:
    """The methods the resource at this request's path answers: those of the published path templates that
    match it, the most specific first (`/admin/documents/delete` is its own resource, though
    `/admin/documents/{doc_id}` matches it too); Starlette's own 405 names only the first route matched."""
    path = request.url.path
    templates = [(t.count("{"), ops) for t, ops in request.app.openapi().get("paths", {}).items()
                 if re.fullmatch(_template_regex(t), path)]
    if templates:
        fewest = min(params for params, _ in templates)
        return sorted({m.upper() for params, ops in templates if params == fewest for m in ops if m in _METHODS})
    return sorted(m.upper() for m in _METHODS
                  if any(route.matches({**request.scope, "method": m.upper()})[0] == Match.FULL
                         for route in request.app.router.routes))


_METHODS = ("delete", "get", "head", "patch", "post", "put")


def _template_regex(template: str, slashed_name: bool = False) -> str:
    """`/a/{name}/b` as a regex matching the paths it stands for; with `slashed_name`, the paths whose `{name}`
    holds a '/' (captured as `name`)."""
    return "".join("(?P<name>.+/.+)" if slashed_name and part == "{name}" else "[^/]+" if part.startswith("{")
                   else re.escape(part) for part in re.split(r"(\{[^}]+\})", template))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.status == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return api_error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = validation_message(exc.errors())
        return respond(request.url.path, status, "malformed_body" if status == 400 else "invalid_request",
                       message, param)

    @app.exception_handler(WhitevecError)
    async def _domain(request: Request, exc: WhitevecError) -> JSONResponse:
        return await _api_error(request, domain_to_api(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            name = _name_with_a_slash(request)  # /admin/collections/my/faq: say the name rule too (the same
            # answer whether or not a collection `my` exists, so a key learns nothing of other collections)
            said = "" if name is None else (f"; if {shown(name)} is meant as a collection name, it cannot be one: "
                                            f"{RULES['collection'].rule}")
            error: ApiError = NotFound(f"no route {request.url.path}{said}; GET /docs lists the API",
                                       param=None if name is None else "name")
        elif exc.status_code == 405:
            allowed = ", ".join(allowed_methods(request))  # every route on the path, not the first one matched
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"
                                     + (f"; use {allowed}" if allowed else ""),
                                     headers={**(exc.headers or {}), **({"Allow": allowed} if allowed else {})})
        else:
            error = ApiError(str(exc.detail), headers=exc.headers)
            error.status, error.type = exc.status_code, "http_error"
        return api_error_response(request.url.path, error)
