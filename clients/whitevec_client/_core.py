"""What Client and AsyncClient share: request bodies, splitting, error mapping, retry policy, job polling.
The two clients only differ in how they send a request and how they sleep."""

from __future__ import annotations

import os
import random
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import httpx

from .errors import (AuthError, JobFailed, NotFound, NotReady, Overloaded, ServerError, ValidationError, VersionChanged,
                     WhitevecError)
from .types import Hit, Job

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("succeeded", "failed", "cancelled")


class Routes:
    """The paths of one collection's routes: `default` keeps the paths from before collections."""

    def __init__(self, collection: str = "default") -> None:
        from urllib.parse import quote

        self.collection = collection
        if collection == "default":
            self.embed, self.search = "/embed", "/search"
            self.rebuild, self.documents, self.versions = "/admin/index/rebuild", "/admin/documents", "/admin/versions"
        else:
            name = quote(collection, safe="")
            self.embed, self.search = f"/collections/{name}/embed", f"/collections/{name}/search"
            admin = f"/admin/collections/{name}"
            self.rebuild, self.documents, self.versions = f"{admin}/rebuild", f"{admin}/documents", f"{admin}/versions"


class Core:
    def __init__(self, base_url: Optional[str], api_key: Optional[str], admin_token: Optional[str],
                 retries: int, backoff: float) -> None:
        self.base_url = (base_url or os.environ.get("WHITEVEC_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("WHITEVEC_API_KEY")
        self.admin_token = admin_token or os.environ.get("WHITEVEC_ADMIN_TOKEN")
        self.retries = retries
        self.backoff = backoff
        self.limits: Optional[Dict[str, int]] = None

    # --- requests -----------------------------------------------------------------------

    def headers(self, admin: bool) -> Dict[str, str]:
        """Admin routes send the admin token (else the key: a `write` access key opens document routes);
        data routes send the key (else the admin token, which opens everything)."""
        token = (self.admin_token or self.api_key) if admin else (self.api_key or self.admin_token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    @staticmethod
    def error_for(response: httpx.Response) -> WhitevecError:
        """The exception for a non-2xx answer, carrying the server's message."""
        try:
            body = response.json()
            detail = body.get("error", {}) if isinstance(body, dict) else {}
            message = detail.get("message") or response.text
        except ValueError:
            body, detail, message = response.text, {}, response.text or response.reason_phrase
        status = response.status_code
        if status in (401, 403):
            return AuthError(message, status, body)
        if status == 429:
            retry = response.headers.get("retry-after")
            return Overloaded(message, status, body, retry_after=float(retry) if retry else None)
        if status == 503:
            return NotReady(message, status, body)
        if status == 404:
            return NotFound(message, status, body, param=detail.get("param"))
        if 400 <= status < 500:
            return ValidationError(message, status, body, param=detail.get("param"))
        return ServerError(message, status, body)

    def retry_delay(self, attempt: int, error: WhitevecError, idempotent: bool) -> Optional[float]:
        """Seconds to wait before another try, or None to give up (non-idempotent calls never retry)."""
        retryable = isinstance(error, (Overloaded, NotReady)) or (isinstance(error, ServerError) and error.status is None)
        if not idempotent or not retryable or attempt >= self.retries:
            return None
        delay = min(self.backoff * (2 ** attempt), 8.0)
        if isinstance(error, Overloaded) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay * random.uniform(1.0, 1.5)  # jitter: clients refused together do not return together

    @staticmethod
    def transport_error(exc: httpx.TransportError, url: str) -> ServerError:
        return ServerError(f"could not reach whitevec at {url}: {exc}")

    # --- bodies and results -------------------------------------------------------------

    def chunks(self, items: Sequence[Any]) -> List[Sequence[Any]]:
        """Split so no request exceeds the server's max_texts (read once from /readyz)."""
        size = max(1, (self.limits or {}).get("max_texts", 256))
        return [items[i : i + size] for i in range(0, len(items), size)]

    def embed_bodies(self, texts: Union[str, Sequence[str]], dim: Optional[int], whiten: bool,
                     normalize: bool) -> List[Dict[str, Any]]:
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts; wrap a single text in a list")
        return [{"texts": list(c), "dim": dim, "whiten": whiten, "normalize": normalize} for c in self.chunks(texts)]

    @staticmethod
    def embed_result(answers: List[Dict[str, Any]], as_numpy: bool) -> Any:
        """All chunks' vectors in order; VersionChanged if the chunks came from different versions."""
        versions = list(dict.fromkeys(a.get("version") for a in answers))
        if len(versions) > 1:
            raise VersionChanged(versions)
        vectors = [v for a in answers for v in a["embeddings"]]
        if as_numpy:
            import numpy as np

            return np.asarray(vectors, dtype=np.float32)
        return vectors

    @staticmethod
    def upsert_chunks(documents: Sequence[Dict[str, Any]], size: int = 10_000) -> List[Sequence[Dict[str, Any]]]:
        """WHITEVEC_MAX_UPSERT's default per call (a smaller server limit answers 422 naming it)."""
        if isinstance(documents, dict):
            raise TypeError("upsert takes a list of documents, not one document")
        return [documents[i : i + size] for i in range(0, len(documents), size)]

    def search_bodies(self, query: Union[str, Sequence[str]], k: int,
                      filter: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        extra = {"filter": filter} if filter is not None else {}
        if isinstance(query, str):
            return [{"query": query, "k": k, **extra}]
        return [{"queries": list(c), "k": k, **extra} for c in self.chunks(query)]

    @staticmethod
    def search_result(query: Union[str, Sequence[str]], answers: List[Dict[str, Any]]) -> Any:
        results = [[Hit(**h) for h in r["hits"]] for a in answers for r in a["results"]]
        return results[0] if isinstance(query, str) else results

    @staticmethod
    def rebuild_body(documents: Optional[Sequence[Dict[str, Any]]], path: Optional[str],
                     whitening: Optional[Dict[str, Any]], index: Optional[Dict[str, Any]], mode: Optional[str] = None,
                     confirm_shrink: Optional[bool] = None, reencode: Optional[bool] = None) -> Dict[str, Any]:
        if reencode is False:  # re-whiten the served corpus: no documents
            body: Dict[str, Any] = {"reencode": False}
        elif (documents is None) == (path is None):
            raise TypeError("give exactly one of documents= or path= (or reencode=False to re-whiten what is served)")
        else:
            body = {"documents": list(documents)} if documents is not None else {"path": path}
        for key, value in (("whitening", whitening), ("index", index), ("mode", mode),
                           ("confirm_shrink", confirm_shrink)):
            if value is not None:
                body[key] = value
        return body

    # --- waiting ------------------------------------------------------------------------

    @staticmethod
    def progress_bar(job: Job, progress: bool) -> Any:
        if not progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=job.progress.total or None, desc=f"{job.kind} {job.id}", unit="it")

    @staticmethod
    def observe(job: Job, bar: Any, deadline: Optional[float]) -> Optional[Job]:
        """Update the bar; the finished job when it is done, raising JobFailed; None to keep polling."""
        if bar is not None:
            if job.progress.total and bar.total != job.progress.total:
                bar.total = job.progress.total
            bar.n = job.progress.done
            if "loss" in job.detail:
                bar.set_postfix(loss=job.detail["loss"], refresh=False)
            bar.refresh()
        if job.state in FINAL:
            if bar is not None:
                bar.close()
            if job.state != "succeeded":
                raise JobFailed(job)
            return job
        if deadline is not None and time.monotonic() > deadline:
            if bar is not None:
                bar.close()
            raise TimeoutError(f"job {job.id} is still {job.state} ({job.progress.done}/{job.progress.total})")
        return None
