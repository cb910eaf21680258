"""Exceptions, one per kind of failure a caller handles differently."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional


class WhitevecError(Exception):
    """Base of the errors about a call to the server: its answer, or the lack of one."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class AuthError(WhitevecError):
    """401: a missing, wrong or revoked key or admin token; 403: a valid one without the right."""


class InvalidRequest(WhitevecError):
    """Another 4xx: the request was refused; `message` is the server's, saying what to fix, and
    `param` the field it is about (when the server names one)."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None,
                 param: Optional[str] = None) -> None:
        super().__init__(message, status, body)
        self.param = param


class NotFound(InvalidRequest):
    """404: no such collection, document, version, key or job."""


class Conflict(InvalidRequest):
    """409: refused in the server's current state (e.g. deleting a collection without confirm=True,
    searching before any index is built); the message says what to do."""


class Overloaded(WhitevecError):
    """429: the server's queue is full; retry after `retry_after` seconds."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message, status, body)
        self.retry_after = retry_after


class NotReady(WhitevecError):
    """503: the server is still loading (or could not load) its model."""


class ServerError(WhitevecError):
    """5xx, or the server could not be reached."""


class VersionChanged(WhitevecError):
    """A split embed() got answers from two index versions (a rebuild landed in between) and the
    retries did not get a consistent set; vectors from two spaces are never returned."""

    def __init__(self, versions: Any) -> None:
        super().__init__(f"the server switched versions while answering ({', '.join(map(str, versions))}); "
                         "retry the call")
        self.versions = versions


class JobFailed(WhitevecError):
    """A job ended failed, cancelled or interrupted; `job` holds its record and `message` the server's reason."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.id} {job.state}: {job.error}")
        self.job = job




def renamed(module: str, name: str) -> Any:
    """A module `__getattr__`'s answer: `ValidationError`, the old name of InvalidRequest (it shadowed
    pydantic's), still works but warns; any other name is missing."""
    if name == "ValidationError":
        import warnings

        warnings.warn("whitevec_client.ValidationError is now InvalidRequest", DeprecationWarning, stacklevel=3)
        return InvalidRequest
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


if TYPE_CHECKING:
    ValidationError = InvalidRequest  # deprecated
else:
    def __getattr__(name: str) -> Any:
        return renamed(__name__, name)
