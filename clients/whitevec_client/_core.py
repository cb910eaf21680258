"""What Client and AsyncClient share besides the calls themselves: configuration, auth headers, error
mapping, retry policy and job polling. The two clients differ only in how they send and how they sleep."""

from __future__ import annotations

import datetime
import email.utils
import os
import random
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, TypeVar
from urllib.parse import quote

import httpx

from .errors import (AuthError, Conflict, InvalidRequest, JobFailed, NotFound, NotReady, Overloaded, ServerError,
                     WhitevecError)
from .types import Job

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
T = TypeVar("T")


def q(part: str) -> str:
    """One path segment, quoted (a document id may hold `/`)."""
    return quote(part, safe="")


class Routes:
    """The paths of one collection's routes: `default` keeps the paths from before collections."""

    def __init__(self, collection: str = "default") -> None:
        self.collection = collection
        if collection == "default":
            self.embed, self.search = "/embed", "/search"
            self.rebuild, self.documents, self.versions = "/admin/index/rebuild", "/admin/documents", "/admin/versions"
        else:
            name = q(collection)
            self.embed, self.search = f"/collections/{name}/embed", f"/collections/{name}/search"
            admin = f"/admin/collections/{name}"
            self.rebuild, self.documents, self.versions = f"{admin}/rebuild", f"{admin}/documents", f"{admin}/versions"


def retry_after(value: Optional[str]) -> Optional[float]:
    """A Retry-After header as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


class Core:
    """A client's settings and the policies both clients apply."""

    def __init__(self, base_url: Optional[str], api_key: Optional[str], admin_token: Optional[str],
                 retries: int, backoff: float) -> None:
        self.base_url = (base_url or os.environ.get("WHITEVEC_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("WHITEVEC_API_KEY")
        self.admin_token = admin_token or os.environ.get("WHITEVEC_ADMIN_TOKEN")
        self.retries = retries
        self.backoff = backoff
        self.limits: Optional[Dict[str, int]] = None

    def headers(self, admin: bool) -> Dict[str, str]:
        """Admin routes send the admin token (else the key: a `write` access key opens document routes);
        data routes send the key (else the admin token, which opens everything)."""
        token = (self.admin_token or self.api_key) if admin else (self.api_key or self.admin_token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    @staticmethod
    def error_for(response: httpx.Response, fixes: Optional[Mapping[str, str]] = None) -> WhitevecError:
        """The exception for a non-2xx answer, carrying the server's message (its advice in HTTP terms said as
        the call's parameter, per `fixes`)."""
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = response.text
        # whitevec says {"error": {"message", "param"}}; a proxy may say {"error": "…"}, {"detail": …} or HTML
        error = body.get("error") if isinstance(body, dict) else None
        detail = error if isinstance(error, dict) else {}
        message = str(detail.get("message") or (error if isinstance(error, str) else None)
                      or response.text or response.reason_phrase)
        for http_words, python_words in (fixes or {}).items():
            message = message.replace(http_words, python_words)
        status = response.status_code
        if status in (401, 403):
            return AuthError(message, status, body)
        if status == 429:
            return Overloaded(message, status, body, retry_after=retry_after(response.headers.get("retry-after")))
        if status == 503:
            return NotReady(message, status, body)
        if status in (502, 504):  # a proxy in front could not reach the server: worth another try
            return ServerError(message, status, body)
        if status == 404:
            return NotFound(message, status, body, param=detail.get("param"))
        if status == 409:
            return Conflict(message, status, body, param=detail.get("param"))
        if 400 <= status < 500:
            return InvalidRequest(message, status, body, param=detail.get("param"))
        return ServerError(message, status, body)

    def retry_delay(self, attempt: int, error: WhitevecError, retry: bool) -> Optional[float]:
        """Seconds to wait before another try, or None to give up (calls that are not idempotent never retry)."""
        unreachable = isinstance(error, ServerError) and error.status in (None, 502, 504)
        retryable = isinstance(error, (Overloaded, NotReady)) or unreachable
        if not retry or not retryable or attempt >= self.retries:
            return None
        delay = min(self.backoff * 2.0 ** attempt, 8.0)
        if isinstance(error, Overloaded) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay * random.uniform(1.0, 1.5)  # jitter: clients refused together do not return together

    def transport_error(self, exc: httpx.TransportError) -> ServerError:
        return ServerError(f"could not reach whitevec at {self.base_url}: {exc}")

    def chunks(self, items: Sequence[T]) -> List[Sequence[T]]:
        """Split so no request exceeds the server's max_texts (read once from /readyz)."""
        size = max(1, (self.limits or {}).get("max_texts", 256))
        return [items[i : i + size] for i in range(0, len(items), size)]

    # --- waiting for a job ------------------------------------------------------------------

    @staticmethod
    def progress_bar(job: Job, progress: bool) -> Any:
        if not progress:
            return None
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            return None
        return tqdm(total=job.progress.total or None, desc=f"{job.kind} {job.id}", unit="it")

    @staticmethod
    def observe(job: Job, bar: Any, deadline: Optional[float]) -> Optional[Job]:
        """Update the bar (the caller closes it); the finished job when it is done, raising JobFailed; None to
        keep polling."""
        if bar is not None:
            if job.progress.total and bar.total != job.progress.total:
                bar.total = job.progress.total
            bar.n = job.progress.done
            if "loss" in job.detail:
                bar.set_postfix(loss=job.detail["loss"], refresh=False)
            bar.refresh()
        if job.state in FINAL:
            if job.state != "succeeded":
                raise JobFailed(job)
            return job
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job.id} is still {job.state} ({job.progress.done}/{job.progress.total})")
        return None
