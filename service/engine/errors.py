"""The named errors the engine raises, each with the status and type its answer carries; the HTTP layer
(service/http/errors.py) turns them into bodies and declares them on routes. The engine raises them and never
looks at a status: one table of names, as TEI's ErrorType."""

from __future__ import annotations


class ApiError(Exception):
    """Base: an answer with a status, a type and a message that says what to fix."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.param = param


class MalformedBody(ApiError):
    """The body is not JSON, or nested too deeply."""

    status, type = 400, "malformed_body"


class Unauthorized(ApiError):
    """No valid credential: none was sent, or the one sent is wrong or revoked."""

    status, type = 401, "unauthorized"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer", **(headers or {})}, param=param)


class Forbidden(ApiError):
    """A valid credential without the right (a read-only key writing, a key on an admin route)."""

    status, type = 403, "forbidden"


class NotFound(ApiError):
    """No such route, job, document or model."""

    status, type = 404, "not_found"


class MethodNotAllowed(ApiError):
    """The route exists but not for this method."""

    status, type = 405, "method_not_allowed"


class Conflict(ApiError):
    """The request cannot be served in the current state (no index yet, job already ended)."""

    status, type = 409, "conflict"


class PayloadTooLarge(ApiError):
    """The body is over WHITEVEC_MAX_BODY_BYTES."""

    status, type = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    """The body was not sent as application/json."""

    status, type = 415, "unsupported_media_type"


class InvalidRequest(ApiError):
    """A field is missing, of the wrong type, or out of its limits."""

    status, type = 422, "invalid_request"


class Overloaded(ApiError):
    """The encode queue is full; retry after Retry-After seconds."""

    status, type = 429, "overloaded"


class ClientClosedRequest(ApiError):
    """The client went away before its answer was ready (nothing was encoded for it)."""

    status, type = 499, "client_closed_request"


class ServerError(ApiError):
    """An unexpected failure inside whitevec; the server log has the traceback."""

    status, type = 500, "server_error"


class NotReady(ApiError):
    """The model is still loading, or the encoder stopped; retry after Retry-After seconds."""

    status, type = 503, "not_ready"
