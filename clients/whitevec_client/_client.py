"""Client (blocking) and AsyncClient (asyncio): the same methods over one shared core."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote
from typing import Any, Dict, List, Optional, Sequence, Union

import httpx

from ._core import Core
from .errors import VersionChanged, WhitevecError
from .types import Hit, Job

Texts = Sequence[str]
Query = Union[str, Sequence[str]]


class Client:
    """Blocking client. Retries 429/503/connection errors with backoff on idempotent calls only."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 admin_token: Optional[str] = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        self._core = Core(base_url, api_key, admin_token, retries, backoff)
        self._http = httpx.Client(base_url=self._core.base_url, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, json: Any = None, admin: bool = False,
                 idempotent: bool = True) -> Any:
        attempt = 0
        while True:
            try:
                r = self._http.request(method, path, json=json, headers=self._core.headers(admin))
            except httpx.TransportError as exc:
                error: WhitevecError = self._core.transport_error(exc, self._core.base_url)
            else:
                if r.is_success:
                    return r.json()
                error = self._core.error_for(r)
            delay = self._core.retry_delay(attempt, error, idempotent)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def _limits(self) -> None:
        if self._core.limits is None:
            self._core.limits = self._request("GET", "/readyz")["limits"]

    def embed(self, texts: Texts, dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
              as_numpy: bool = False) -> Any:
        """Vectors in input order; inputs above the server's limit go in several requests, all answered
        by one version (retried when a rebuild lands in between; VersionChanged if it keeps changing)."""
        self._limits()
        bodies = self._core.embed_bodies(texts, dim, whiten, normalize)
        for attempt in range(self._core.retries + 1):
            try:
                return self._core.embed_result([self._request("POST", "/embed", b) for b in bodies], as_numpy)
            except VersionChanged:
                if attempt >= self._core.retries:
                    raise

    def search(self, query: Query, k: int = 10,
               filter: Optional[Dict[str, Any]] = None) -> Union[List[Hit], List[List[Hit]]]:
        """One query → list[Hit]; a list of queries → list[list[Hit]], in query order. `filter`:
        metadata to match, AND over keys: {"lang": "en", "year": {"$in": [2023, 2024]}}."""
        self._limits()
        bodies = self._core.search_bodies(query, k, filter)
        return self._core.search_result(query, [self._request("POST", "/search", b) for b in bodies])

    def rebuild_index(self, documents: Optional[Sequence[Dict[str, Any]]] = None, path: Optional[str] = None,
                      whitening: Optional[Dict[str, Any]] = None, index: Optional[Dict[str, Any]] = None) -> Job:
        body = self._core.rebuild_body(documents, path, whitening, index)
        accepted = self._request("POST", "/admin/index/rebuild", body, admin=True, idempotent=False)
        return self.job(accepted["job_id"])

    def train(self, **fields: Any) -> Job:
        """POST /admin/train with the given fields (examples= or pairs= or path=, epochs=, activate=, …)."""
        accepted = self._request("POST", "/admin/train", fields, admin=True, idempotent=False)
        return self.job(accepted["job_id"])

    def upsert(self, documents: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        """Add or replace documents ({"id", "text", "metadata"?}); searchable when this returns.
        Sent in calls of at most the server's WHITEVEC_MAX_UPSERT; returns the last call's answer with
        the total upserted."""
        answer: Dict[str, Any] = {"upserted": 0, "version": None}
        for chunk in self._core.upsert_chunks(documents):
            done = self._request("POST", "/admin/documents", {"documents": list(chunk)}, admin=True)
            answer = {"upserted": answer["upserted"] + done["upserted"], "version": done["version"]}
        return answer

    def delete(self, ids: Sequence[str]) -> Dict[str, Any]:
        """Delete documents by id → {"deleted", "missing", "version"}."""
        return self._request("POST", "/admin/documents/delete", {"ids": list(ids)}, admin=True)

    def get_document(self, doc_id: str) -> Dict[str, Any]:
        """{"id", "text", "metadata", "version"} of one served document (NotFound if unknown)."""
        return self._request("GET", f"/admin/documents/{quote(doc_id, safe='')}", admin=True)

    def versions(self) -> Dict[str, Any]:
        """{"active": id, "versions": [...]}: every kept version, newest first."""
        return self._request("GET", "/admin/versions", admin=True)

    def activate(self, version: str) -> Dict[str, Any]:
        """Serve a kept version again (roll back or forward)."""
        return self._request("POST", f"/admin/versions/{quote(version, safe='')}/activate", admin=True)

    def job(self, job_id: str) -> Job:
        return Job(**self._request("GET", f"/admin/jobs/{job_id}", admin=True))

    def jobs(self) -> List[Job]:
        return [Job(**j) for j in self._request("GET", "/admin/jobs", admin=True)]

    def cancel(self, job_id: str) -> Job:
        return Job(**self._request("POST", f"/admin/jobs/{job_id}/cancel", admin=True, idempotent=False))

    def wait(self, job: Union[Job, str], timeout: Optional[float] = None, progress: bool = True,
             poll: float = 0.5) -> Job:
        """Poll until the job ends; a tqdm bar when tqdm is installed; JobFailed with the server's reason."""
        current = self.job(job if isinstance(job, str) else job.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._core.progress_bar(current, progress)
        while (done := self._core.observe(current, bar, deadline)) is None:
            time.sleep(poll)
            current = self.job(current.id)
        return done


class AsyncClient:
    """The asyncio twin of Client: `async with AsyncClient(...) as wv: await wv.embed(...)`."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 admin_token: Optional[str] = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        self._core = Core(base_url, api_key, admin_token, retries, backoff)
        self._http = httpx.AsyncClient(base_url=self._core.base_url, timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, json: Any = None, admin: bool = False,
                       idempotent: bool = True) -> Any:
        attempt = 0
        while True:
            try:
                r = await self._http.request(method, path, json=json, headers=self._core.headers(admin))
            except httpx.TransportError as exc:
                error: WhitevecError = self._core.transport_error(exc, self._core.base_url)
            else:
                if r.is_success:
                    return r.json()
                error = self._core.error_for(r)
            delay = self._core.retry_delay(attempt, error, idempotent)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def _limits(self) -> None:
        if self._core.limits is None:
            self._core.limits = (await self._request("GET", "/readyz"))["limits"]

    async def embed(self, texts: Texts, dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
                    as_numpy: bool = False) -> Any:
        await self._limits()
        bodies = self._core.embed_bodies(texts, dim, whiten, normalize)
        for attempt in range(self._core.retries + 1):
            try:
                return self._core.embed_result([await self._request("POST", "/embed", b) for b in bodies], as_numpy)
            except VersionChanged:
                if attempt >= self._core.retries:
                    raise

    async def search(self, query: Query, k: int = 10,
                     filter: Optional[Dict[str, Any]] = None) -> Union[List[Hit], List[List[Hit]]]:
        await self._limits()
        bodies = self._core.search_bodies(query, k, filter)
        return self._core.search_result(query, [await self._request("POST", "/search", b) for b in bodies])

    async def rebuild_index(self, documents: Optional[Sequence[Dict[str, Any]]] = None, path: Optional[str] = None,
                            whitening: Optional[Dict[str, Any]] = None,
                            index: Optional[Dict[str, Any]] = None) -> Job:
        body = self._core.rebuild_body(documents, path, whitening, index)
        accepted = await self._request("POST", "/admin/index/rebuild", body, admin=True, idempotent=False)
        return await self.job(accepted["job_id"])

    async def train(self, **fields: Any) -> Job:
        accepted = await self._request("POST", "/admin/train", fields, admin=True, idempotent=False)
        return await self.job(accepted["job_id"])

    async def upsert(self, documents: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        answer: Dict[str, Any] = {"upserted": 0, "version": None}
        for chunk in self._core.upsert_chunks(documents):
            done = await self._request("POST", "/admin/documents", {"documents": list(chunk)}, admin=True)
            answer = {"upserted": answer["upserted"] + done["upserted"], "version": done["version"]}
        return answer

    async def delete(self, ids: Sequence[str]) -> Dict[str, Any]:
        return await self._request("POST", "/admin/documents/delete", {"ids": list(ids)}, admin=True)

    async def get_document(self, doc_id: str) -> Dict[str, Any]:
        return await self._request("GET", f"/admin/documents/{quote(doc_id, safe='')}", admin=True)

    async def versions(self) -> Dict[str, Any]:
        return await self._request("GET", "/admin/versions", admin=True)

    async def activate(self, version: str) -> Dict[str, Any]:
        return await self._request("POST", f"/admin/versions/{quote(version, safe='')}/activate", admin=True)

    async def job(self, job_id: str) -> Job:
        return Job(**await self._request("GET", f"/admin/jobs/{job_id}", admin=True))

    async def jobs(self) -> List[Job]:
        return [Job(**j) for j in await self._request("GET", "/admin/jobs", admin=True)]

    async def cancel(self, job_id: str) -> Job:
        return Job(**await self._request("POST", f"/admin/jobs/{job_id}/cancel", admin=True, idempotent=False))

    async def wait(self, job: Union[Job, str], timeout: Optional[float] = None, progress: bool = True,
                   poll: float = 0.5) -> Job:
        current = await self.job(job if isinstance(job, str) else job.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._core.progress_bar(current, progress)
        while (done := self._core.observe(current, bar, deadline)) is None:
            await asyncio.sleep(poll)
            current = await self.job(current.id)
        return done
