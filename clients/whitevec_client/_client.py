"""Client (blocking) and AsyncClient (asyncio): the same methods over one shared core. Each has a
collection handle (`client.collection("faq")`) with the corpus methods; the client's own corpus
methods act on the collection `default`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from ._core import Core, Routes
from .errors import VersionChanged, WhitevecError
from .types import Hit, Job

Texts = Sequence[str]
Query = Union[str, Sequence[str]]
Doc = Dict[str, Any]


def _q(part: str) -> str:
    return quote(part, safe="")


class _Corpus:
    """Blocking methods over one collection's routes (`_routes`), sent through `_send`."""

    _core: Core
    _routes: Routes

    def _send(self, method: str, path: str, json: Any = None, admin: bool = False, idempotent: bool = True) -> Any:
        raise NotImplementedError

    def _limits(self) -> None:
        if self._core.limits is None:
            self._core.limits = self._send("GET", "/readyz")["limits"]

    def embed(self, texts: Texts, dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
              as_numpy: bool = False) -> Any:
        """Vectors in input order; inputs above the server's limit go in several requests, all answered
        by one version (retried when a rebuild lands in between; VersionChanged if it keeps changing)."""
        self._limits()
        bodies = self._core.embed_bodies(texts, dim, whiten, normalize)
        for attempt in range(self._core.retries + 1):
            try:
                return self._core.embed_result([self._send("POST", self._routes.embed, b) for b in bodies], as_numpy)
            except VersionChanged:
                if attempt >= self._core.retries:
                    raise

    def search(self, query: Query, k: int = 10,
               filter: Optional[Dict[str, Any]] = None) -> Union[List[Hit], List[List[Hit]]]:
        """One query → list[Hit]; a list of queries → list[list[Hit]], in query order. `filter`:
        metadata to match, AND over keys: {"lang": "en", "year": {"$in": [2023, 2024]}}."""
        self._limits()
        bodies = self._core.search_bodies(query, k, filter)
        return self._core.search_result(query, [self._send("POST", self._routes.search, b) for b in bodies])

    def rebuild_index(self, documents: Optional[Sequence[Doc]] = None, path: Optional[str] = None,
                      whitening: Optional[Dict[str, Any]] = None, index: Optional[Dict[str, Any]] = None,
                      mode: Optional[str] = None, confirm_shrink: Optional[bool] = None,
                      reencode: Optional[bool] = None) -> Job:
        """Start a rebuild job (documents= or path=; mode "replace" or "merge"; reencode=False re-whitens
        what is served); returns the job: `wait(job)` follows it."""
        body = self._core.rebuild_body(documents, path, whitening, index, mode, confirm_shrink, reencode)
        accepted = self._send("POST", self._routes.rebuild, body, admin=True, idempotent=False)
        return Job(**self._send("GET", f"/admin/jobs/{_q(accepted['job_id'])}", admin=True))

    def upsert(self, documents: Sequence[Doc]) -> Dict[str, Any]:
        """Add or replace documents ({"id", "text", "metadata"?}); searchable when this returns.
        Sent in calls of at most the server's WHITEVEC_MAX_UPSERT; returns the last call's answer with
        the total upserted."""
        answer: Dict[str, Any] = {"upserted": 0, "version": None}
        for chunk in self._core.upsert_chunks(documents):
            done = self._send("POST", self._routes.documents, {"documents": list(chunk)}, admin=True)
            answer = {"upserted": answer["upserted"] + done["upserted"], "version": done["version"]}
        return answer

    def delete(self, ids: Sequence[str]) -> Dict[str, Any]:
        """Delete documents by id → {"deleted", "missing", "version"}."""
        return self._send("POST", f"{self._routes.documents}/delete", {"ids": list(ids)}, admin=True)

    def get_document(self, doc_id: str) -> Dict[str, Any]:
        """{"id", "text", "metadata", "version"} of one served document (NotFound if unknown)."""
        return self._send("GET", f"{self._routes.documents}/{_q(doc_id)}", admin=True)

    def versions(self) -> Dict[str, Any]:
        """{"active": id, "versions": [...]}: every kept version, newest first."""
        return self._send("GET", self._routes.versions, admin=True)

    def activate(self, version: str) -> Dict[str, Any]:
        """Serve a kept version again (roll back or forward)."""
        return self._send("POST", f"{self._routes.versions}/{_q(version)}/activate", admin=True)


class Collection(_Corpus):
    """One collection of a server: `client.collection("faq")`. Shares the client's connection."""

    def __init__(self, client: "Client", name: str) -> None:
        self._client, self._core, self._routes, self.name = client, client._core, Routes(name), name

    def _send(self, method: str, path: str, json: Any = None, admin: bool = False, idempotent: bool = True) -> Any:
        return self._client._send(method, path, json, admin, idempotent)


class Client(_Corpus):
    """Blocking client. Retries 429/503/connection errors with backoff on idempotent calls only."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 admin_token: Optional[str] = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        self._core = Core(base_url, api_key, admin_token, retries, backoff)
        self._routes = Routes()
        self._http = httpx.Client(base_url=self._core.base_url, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, json: Any = None, admin: bool = False, idempotent: bool = True) -> Any:
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

    # collections and keys (admin token)
    def collection(self, name: str) -> Collection:
        """A handle on collection `name`: search, embed, upsert, delete, get_document, rebuild_index,
        versions, activate (nothing is sent until one of them is called)."""
        return Collection(self, name)

    def create_collection(self, name: str, model: Optional[str] = None, whitening: Optional[Dict[str, Any]] = None,
                          index: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """A new empty collection → {"name", "model", "whitening", "index", "documents"}."""
        body = {k: v for k, v in (("model", model), ("whitening", whitening), ("index", index)) if v is not None}
        return self._send("PUT", f"/admin/collections/{_q(name)}", body, admin=True, idempotent=False)

    def collections(self) -> List[Dict[str, Any]]:
        """Every collection: name, model, documents, active_version, dim, created_at."""
        return self._send("GET", "/admin/collections", admin=True)["collections"]

    def delete_collection(self, name: str, confirm: bool = False) -> Dict[str, Any]:
        """Delete a collection and its documents; refused (Conflict) unless confirm=True."""
        suffix = "?confirm=true" if confirm else ""
        return self._send("DELETE", f"/admin/collections/{_q(name)}{suffix}", admin=True, idempotent=False)

    def create_key(self, collections: Sequence[str], access: str = "read", name: Optional[str] = None) -> Dict[str, Any]:
        """A key for `collections`, "read" or "write" → {"id", "key", ...}; the key is shown this once."""
        body = {"collections": list(collections), "access": access, **({"name": name} if name else {})}
        return self._send("POST", "/admin/keys", body, admin=True, idempotent=False)

    def keys(self) -> List[Dict[str, Any]]:
        """Every key's id, name, collections, access, created and last-used times (never the key)."""
        return self._send("GET", "/admin/keys", admin=True)["keys"]

    def revoke_key(self, key_id: str) -> Dict[str, Any]:
        """Refuse a key from now on."""
        return self._send("DELETE", f"/admin/keys/{_q(key_id)}", admin=True)

    # training and jobs (admin token)
    def train(self, **fields: Any) -> Job:
        """POST /admin/train with the given fields (examples= or pairs= or path=, epochs=, activate=,
        collection=, …)."""
        accepted = self._send("POST", "/admin/train", fields, admin=True, idempotent=False)
        return self.job(accepted["job_id"])

    def job(self, job_id: str) -> Job:
        return Job(**self._send("GET", f"/admin/jobs/{_q(job_id)}", admin=True))

    def jobs(self, collection: Optional[str] = None) -> List[Job]:
        """The latest jobs, newest first; of one collection when given."""
        suffix = f"?collection={_q(collection)}" if collection else ""
        return [Job(**j) for j in self._send("GET", f"/admin/jobs{suffix}", admin=True)]

    def cancel(self, job_id: str) -> Job:
        return Job(**self._send("POST", f"/admin/jobs/{_q(job_id)}/cancel", admin=True, idempotent=False))

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


class _AsyncCorpus:
    """The asyncio twin of _Corpus."""

    _core: Core
    _routes: Routes

    async def _send(self, method: str, path: str, json: Any = None, admin: bool = False,
                    idempotent: bool = True) -> Any:
        raise NotImplementedError

    async def _limits(self) -> None:
        if self._core.limits is None:
            self._core.limits = (await self._send("GET", "/readyz"))["limits"]

    async def embed(self, texts: Texts, dim: Optional[int] = None, whiten: bool = True, normalize: bool = True,
                    as_numpy: bool = False) -> Any:
        """Vectors in input order (see Client.embed)."""
        await self._limits()
        bodies = self._core.embed_bodies(texts, dim, whiten, normalize)
        for attempt in range(self._core.retries + 1):
            try:
                answers = [await self._send("POST", self._routes.embed, b) for b in bodies]
                return self._core.embed_result(answers, as_numpy)
            except VersionChanged:
                if attempt >= self._core.retries:
                    raise

    async def search(self, query: Query, k: int = 10,
                     filter: Optional[Dict[str, Any]] = None) -> Union[List[Hit], List[List[Hit]]]:
        """Nearest documents (see Client.search)."""
        await self._limits()
        bodies = self._core.search_bodies(query, k, filter)
        return self._core.search_result(query, [await self._send("POST", self._routes.search, b) for b in bodies])

    async def rebuild_index(self, documents: Optional[Sequence[Doc]] = None, path: Optional[str] = None,
                            whitening: Optional[Dict[str, Any]] = None, index: Optional[Dict[str, Any]] = None,
                            mode: Optional[str] = None, confirm_shrink: Optional[bool] = None,
                            reencode: Optional[bool] = None) -> Job:
        """Start a rebuild job (see Client.rebuild_index)."""
        body = self._core.rebuild_body(documents, path, whitening, index, mode, confirm_shrink, reencode)
        accepted = await self._send("POST", self._routes.rebuild, body, admin=True, idempotent=False)
        return Job(**await self._send("GET", f"/admin/jobs/{_q(accepted['job_id'])}", admin=True))

    async def upsert(self, documents: Sequence[Doc]) -> Dict[str, Any]:
        """Add or replace documents (see Client.upsert)."""
        answer: Dict[str, Any] = {"upserted": 0, "version": None}
        for chunk in self._core.upsert_chunks(documents):
            done = await self._send("POST", self._routes.documents, {"documents": list(chunk)}, admin=True)
            answer = {"upserted": answer["upserted"] + done["upserted"], "version": done["version"]}
        return answer

    async def delete(self, ids: Sequence[str]) -> Dict[str, Any]:
        """Delete documents by id → {"deleted", "missing", "version"}."""
        return await self._send("POST", f"{self._routes.documents}/delete", {"ids": list(ids)}, admin=True)

    async def get_document(self, doc_id: str) -> Dict[str, Any]:
        """One served document (NotFound if unknown)."""
        return await self._send("GET", f"{self._routes.documents}/{_q(doc_id)}", admin=True)

    async def versions(self) -> Dict[str, Any]:
        """{"active": id, "versions": [...]}, newest first."""
        return await self._send("GET", self._routes.versions, admin=True)

    async def activate(self, version: str) -> Dict[str, Any]:
        """Serve a kept version again (roll back or forward)."""
        return await self._send("POST", f"{self._routes.versions}/{_q(version)}/activate", admin=True)


class AsyncCollection(_AsyncCorpus):
    """One collection of a server: `client.collection("faq")` on an AsyncClient."""

    def __init__(self, client: "AsyncClient", name: str) -> None:
        self._client, self._core, self._routes, self.name = client, client._core, Routes(name), name

    async def _send(self, method: str, path: str, json: Any = None, admin: bool = False,
                    idempotent: bool = True) -> Any:
        return await self._client._send(method, path, json, admin, idempotent)


class AsyncClient(_AsyncCorpus):
    """The asyncio twin of Client: `async with AsyncClient(...) as wv: await wv.embed(...)`."""

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 admin_token: Optional[str] = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5) -> None:
        self._core = Core(base_url, api_key, admin_token, retries, backoff)
        self._routes = Routes()
        self._http = httpx.AsyncClient(base_url=self._core.base_url, timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, json: Any = None, admin: bool = False,
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

    def collection(self, name: str) -> AsyncCollection:
        """A handle on collection `name` (see Client.collection)."""
        return AsyncCollection(self, name)

    async def create_collection(self, name: str, model: Optional[str] = None,
                                whitening: Optional[Dict[str, Any]] = None,
                                index: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """A new empty collection (see Client.create_collection)."""
        body = {k: v for k, v in (("model", model), ("whitening", whitening), ("index", index)) if v is not None}
        return await self._send("PUT", f"/admin/collections/{_q(name)}", body, admin=True, idempotent=False)

    async def collections(self) -> List[Dict[str, Any]]:
        """Every collection."""
        return (await self._send("GET", "/admin/collections", admin=True))["collections"]

    async def delete_collection(self, name: str, confirm: bool = False) -> Dict[str, Any]:
        """Delete a collection and its documents; refused unless confirm=True."""
        suffix = "?confirm=true" if confirm else ""
        return await self._send("DELETE", f"/admin/collections/{_q(name)}{suffix}", admin=True, idempotent=False)

    async def create_key(self, collections: Sequence[str], access: str = "read",
                         name: Optional[str] = None) -> Dict[str, Any]:
        """A key for `collections` (see Client.create_key)."""
        body = {"collections": list(collections), "access": access, **({"name": name} if name else {})}
        return await self._send("POST", "/admin/keys", body, admin=True, idempotent=False)

    async def keys(self) -> List[Dict[str, Any]]:
        """Every key, never the key itself."""
        return (await self._send("GET", "/admin/keys", admin=True))["keys"]

    async def revoke_key(self, key_id: str) -> Dict[str, Any]:
        """Refuse a key from now on."""
        return await self._send("DELETE", f"/admin/keys/{_q(key_id)}", admin=True)

    async def train(self, **fields: Any) -> Job:
        """POST /admin/train with the given fields (see Client.train)."""
        accepted = await self._send("POST", "/admin/train", fields, admin=True, idempotent=False)
        return await self.job(accepted["job_id"])

    async def job(self, job_id: str) -> Job:
        """One job's state, progress and result."""
        return Job(**await self._send("GET", f"/admin/jobs/{_q(job_id)}", admin=True))

    async def jobs(self, collection: Optional[str] = None) -> List[Job]:
        """The latest jobs, newest first; of one collection when given."""
        suffix = f"?collection={_q(collection)}" if collection else ""
        return [Job(**j) for j in await self._send("GET", f"/admin/jobs{suffix}", admin=True)]

    async def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job."""
        return Job(**await self._send("POST", f"/admin/jobs/{_q(job_id)}/cancel", admin=True, idempotent=False))

    async def wait(self, job: Union[Job, str], timeout: Optional[float] = None, progress: bool = True,
                   poll: float = 0.5) -> Job:
        """Poll until the job ends (see Client.wait)."""
        current = await self.job(job if isinstance(job, str) else job.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._core.progress_bar(current, progress)
        while (done := self._core.observe(current, bar, deadline)) is None:
            await asyncio.sleep(poll)
            current = await self.job(current.id)
        return done
