"""Named API errors and their status codes, in one place; every error body is
`{"error": {"type", "message", "param", "code"}}` (OpenAI's shape, so /v1 clients read it too)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from whitevec.models.errors import ModelFolderError, WhiteningError, WhitevecError

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.param = param


class InvalidRequest(ApiError):
    status, type = 422, "invalid_request"


class MalformedBody(ApiError):
    status, type = 400, "malformed_body"


class Unauthorized(ApiError):
    status, type = 401, "unauthorized"


class Forbidden(ApiError):
    status, type = 403, "forbidden"


class NotFound(ApiError):
    status, type = 404, "not_found"


class Conflict(ApiError):
    status, type = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, type = 413, "payload_too_large"


class Overloaded(ApiError):
    status, type = 429, "overloaded"


class NotReady(ApiError):
    status, type = 503, "not_ready"


#: Errors from the models/index packages, by class: bad input unless the server's own model is broken.
DOMAIN_ERRORS: list[tuple[type[Exception], type[ApiError]]] = [
    (ModelFolderError, ApiError),
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
    return {e.status: {"model": ErrorBody, "description": e.__doc__ or e.type} for e in errors}


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str | None]:
    parts, param = [], None
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return 400, f"request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}", None
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        param = param or where
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field; remove it"
        parts.append(f"{where}: {msg}")
    return 422, "; ".join(parts), param


_OPENAI_TYPES = {429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def _respond(request: Request, status: int, type_: str, message: str, param: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    """Under /v1 errors follow OpenAI: 400 for invalid requests, `type` one of OpenAI's, our type as `code`."""
    if request.url.path.startswith("/v1/"):
        body = ErrorBody(error=ErrorDetail(type=_OPENAI_TYPES.get(status, "invalid_request_error"),
                                           message=message, param=param, code=type_))
        status = {422: 400, 403: 401}.get(status, status)  # OpenAI: invalid request 400, bad key 401
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)
    return error_response(status, type_, message, param, headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.status == 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _respond(request, exc.status, exc.type, exc.message, exc.param, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = _validation_message(exc)
        return _respond(request, status, "malformed_body" if status == 400 else "invalid_request", message, param)

    @app.exception_handler(WhitevecError)
    async def _domain(request: Request, exc: WhitevecError) -> JSONResponse:
        for cls, api in DOMAIN_ERRORS:
            if isinstance(exc, cls):
                return await _api_error(request, api(str(exc)))
        raise exc  # pragma: no cover
