"""Who is calling and which collection they reach: admin token, WHITEVEC_API_KEY, access keys.

A caller that may not see a collection gets 404 for it, exactly as for one that does not exist:
a tenant's key must not learn which other collections a server holds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from whitevec.index.bundle import Bundle

from ..engine.collection import Collection
from .errors import Forbidden, NotFound, NotReady, Unauthorized
from ..engine.keys import AccessKey
from ..engine.runtime import Runtime

Need = Literal["read", "write", "admin"]

admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                          description="WHITEVEC_ADMIN_TOKEN (generated and printed at start when unset); "
                                      "document routes also take a `write` access key.")
api_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                        description="An access key (POST /admin/keys), WHITEVEC_API_KEY or the admin token; "
                                    "needed once the server sets WHITEVEC_API_KEY or has any access key.")


@dataclass(frozen=True)
class Caller:
    """What a request's credential allows."""

    admin: bool = False
    reads_all: bool = False  # WHITEVEC_API_KEY, or any caller while the server has no key of any kind
    key: AccessKey | None = None

    def sees(self, collection: str) -> bool:
        return self.admin or self.reads_all or (self.key is not None and self.key.reads(collection))

    def writes(self, collection: str) -> bool:
        return self.admin or (self.key is not None and self.key.writes(collection))


@dataclass(frozen=True)
class Target:
    """A request's collection and the bundle it leased from it."""

    col: Collection
    bundle: Bundle


def same_secret(a: str, b: str) -> bool:
    """Constant time, and blind to length: digests of equal size are compared."""
    return hmac.compare_digest(hashlib.sha256(a.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(b.encode("utf-8", "surrogatepass")).digest())


def identify(rt: Runtime, token: str, wrong: str) -> Caller:
    """The caller a bearer token makes; Forbidden (counted) when it is none of the known credentials."""
    if same_secret(token, rt.admin_token):
        return Caller(admin=True)
    api_key = rt.settings.api_key
    if api_key is not None and same_secret(token, api_key.get_secret_value()):
        return Caller(reads_all=True)
    key = rt.keys.check(token)
    if key is not None:
        return Caller(key=key)
    rt.metrics.auth_failures.labels("wrong").inc()
    raise Forbidden(wrong)


async def data_caller(request: Request,
                      credentials: HTTPAuthorizationCredentials | None = Depends(api_bearer)) -> Caller:
    """Search and embed: any credential; none while the server has neither WHITEVEC_API_KEY nor access keys."""
    rt: Runtime = request.app.state.runtime
    if rt.settings.api_key is None and not rt.keys.any:  # an open server: any bearer (OpenAI SDKs send one)
        admin = credentials is not None and same_secret(credentials.credentials, rt.admin_token)
        return Caller(admin=admin, reads_all=True)
    if credentials is None:
        rt.metrics.auth_failures.labels("missing").inc()
        raise Unauthorized("these endpoints need `Authorization: Bearer <key>`: an access key, the WHITEVEC_API_KEY "
                           "or the admin token")
    return identify(rt, credentials.credentials, "the key is wrong or has been revoked (and it is not the "
                                                 "WHITEVEC_API_KEY)")


async def admin_caller(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(admin_bearer)) -> Caller:
    """Admin and document routes: a credential is always needed."""
    rt: Runtime = request.app.state.runtime
    if credentials is None:
        rt.metrics.auth_failures.labels("missing").inc()
        raise Unauthorized("admin endpoints need `Authorization: Bearer <admin token>`")
    return identify(rt, credentials.credentials, "the admin token is wrong")


async def require_admin(request: Request, caller: Caller = Depends(admin_caller)) -> None:
    """Routes only the admin token opens."""
    if not caller.admin:
        request.app.state.runtime.metrics.auth_failures.labels("not_admin").inc()
        raise Forbidden("this endpoint needs the admin token; access keys may search and embed in their "
                        "collections and, with write access, change their documents")


def resolve(rt: Runtime, caller: Caller, name: str, need: Need) -> Collection:
    """The collection `name` as `caller` may use it for `need`: 404 when unknown or out of the caller's
    sight, 403 when seen but not allowed."""
    col = rt.collection(name)
    if not rt.opened:
        raise NotReady(rt.load_error or "the server is still opening its data dir; retry shortly",
                       headers={"Retry-After": "2"})
    if col is None or not caller.sees(name):
        if not caller.admin and not caller.reads_all:  # counted alike whether it exists: /metrics is open
            rt.metrics.auth_failures.labels("out_of_scope").inc()
        hint = "; GET /admin/collections lists them" if caller.admin else ""
        raise NotFound(f"no collection named {name[:100]!r}{hint}", param="name")
    if need == "write" and not caller.writes(name):
        rt.metrics.auth_failures.labels("read_only").inc()
        raise Forbidden(f"this credential may only read collection {name!r}: changing or reading its documents "
                        "needs a `write` access key or the admin token")
    if need == "admin" and not caller.admin:
        rt.metrics.auth_failures.labels("not_admin").inc()
        raise Forbidden(f"this needs the admin token (an access key may search, embed and, with write access, "
                        f"change documents of collection {name!r})")
    return col


def _caller_for(need: Need) -> Callable[..., Awaitable[Caller]]:
    return data_caller if need == "read" else admin_caller


def collection(need: Need, named: bool) -> Callable[..., Awaitable[Collection]]:
    """Dependency: the collection of the path's `{name}` (or `default`), checked for `need`."""
    if named:
        async def named_dep(request: Request, name: str, caller: Caller = Depends(_caller_for(need))) -> Collection:
            return resolve(request.app.state.runtime, caller, name, need)
        return named_dep

    async def default_dep(request: Request, caller: Caller = Depends(_caller_for(need))) -> Collection:
        return resolve(request.app.state.runtime, caller, "default", need)
    return default_dep


def leased(need: Need, named: bool) -> Callable[..., AsyncIterator[Target]]:
    """Dependency: the collection and its served bundle, leased for the request (a swap meanwhile closes
    the old bundle only after the answer)."""
    find = collection(need, named)

    async def dep(col: Collection = Depends(find)) -> AsyncIterator[Target]:
        with col.served.lease() as bundle:
            if bundle is None:
                raise NotReady(col.load_error or f"collection {col.name} is still loading; retry shortly",
                               headers={"Retry-After": "2"})
            yield Target(col, bundle)
    return dep


# the dependencies routes use, made once
READ, READ_NAMED = leased("read", False), leased("read", True)
WRITE, WRITE_NAMED = collection("write", False), collection("write", True)
WRITE_LEASED, WRITE_LEASED_NAMED = leased("write", False), leased("write", True)
ADMIN, ADMIN_NAMED = collection("admin", False), collection("admin", True)
ADMIN_LEASED, ADMIN_LEASED_NAMED = leased("admin", False), leased("admin", True)
