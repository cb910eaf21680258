"""Exceptions, one per kind of failure a caller handles differently."""

from __future__ import annotations

from typing import Any, Optional


class WhitevecError(Exception):
    """Base of every error this SDK raises."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body


class AuthError(WhitevecError):
    """401/403: a missing or wrong API key or admin token."""


class ValidationError(WhitevecError):
    """Another 4xx: the request was refused; `message` is the server's, saying what to fix."""

    def __init__(self, message: str, status: Optional[int] = None, body: Any = None,
                 param: Optional[str] = None) -> None:
        super().__init__(message, status, body)
        self.param = param


class NotFound(ValidationError):
    """404: no such document, version or job (a ValidationError too, as before it existed)."""


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
    """A job ended failed or cancelled; `job` holds its record and `message` the server's reason."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.id} {job.state}: {job.error}")
        self.job = job
