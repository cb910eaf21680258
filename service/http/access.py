"""Credentials in, passes out: the bearer schemes, and the dependencies that hand routes a collection
through the engine's gate (engine/access.py), which checks the caller's pass against it.

The data plane (/embed, /search, /v1/embeddings) takes its pass and lease through plain calls
(`data_pass`, `readable`, `lease`) rather than a tree of dependencies: FastAPI's dependency solving cost
~100 µs of event-loop time per request there, a sixth of all of it under many single-text clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from whitevec.index.bundle import Bundle

from ..engine.access import Pass
from ..engine.collection import Collection
from .errors import Forbidden, NotReady, Unauthorized

admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                          description="WHITEVEC_ADMIN_TOKEN (generated and printed at start when unset); "
                                      "document routes also take a `write` access key.")
api_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                        description="An access key (POST /admin/keys), WHITEVEC_API_KEY or the admin token; "
                                    "needed when searching is closed (WHITEVEC_READ_ACCESS; GET /readyz with the admin "
                                    "token shows the rule in force).")

#: What a collection dependency checks (the data plane's reads go through `readable`).
Granted = Literal["write", "admin"]

#: `openapi_extra` of a data route that reads its pass through `readable` or `data_pass`: what a
#: dependency on `api_bearer` would declare (install_openapi marks it optional and defines the scheme).
READ_SECURITY = {"security": [{api_bearer.scheme_name: []}]}


@dataclass(frozen=True)
class Target:
    """A request's collection and the bundle it leased from it."""

    col: Collection
    bundle: Bundle


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer …` header; None without one (as `api_bearer` reads it)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


def data_pass(request: Request) -> Pass:
    """Search and embed: any credential; none while searching is open (WHITEVEC_READ_ACCESS, engine/access.py)."""
    gate = request.app.state.runtime.gate
    token = bearer_token(request)
    if gate.open:  # an open server: any bearer (OpenAI SDKs send one)
        return Pass(admin=token is not None and gate.is_admin(token), reads_all=True)
    if token is None:
        gate.refused("missing")
        raise Unauthorized("these endpoints need `Authorization: Bearer <key>`: an access key, the WHITEVEC_API_KEY "
                           "or the admin token")
    return gate.identify(token, "the key is wrong or has been revoked (and it is not the WHITEVEC_API_KEY)")


async def data_caller(request: Request, _: HTTPAuthorizationCredentials | None = Depends(api_bearer)) -> Pass:
    """`data_pass` as a dependency, for the data plane's GET routes (which declare `api_bearer` through it)."""
    return data_pass(request)


async def admin_caller(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(admin_bearer)) -> Pass:
    """Admin and document routes: a credential is always needed."""
    gate = request.app.state.runtime.gate
    if credentials is None:
        gate.refused("missing")
        raise Unauthorized("admin endpoints need `Authorization: Bearer <admin token>`")
    return gate.identify(credentials.credentials, "the admin token is wrong")


async def require_admin(request: Request, caller: Pass = Depends(admin_caller)) -> Pass:
    """Routes only the admin token opens; the admin's pass, for the engine calls they make."""
    if not caller.admin:
        request.app.state.runtime.gate.refused("not_admin")
        raise Forbidden("this endpoint needs the admin token; access keys may search and embed in their "
                        "collections and, with write access, change their documents")
    return caller


def collection(need: Granted, named: bool) -> Callable[..., Awaitable[Collection]]:
    """Dependency: the collection of the path's `{name}` (or `default`), checked for `need` (write or admin:
    the data plane's reads go through `readable`)."""
    if named:
        async def named_dep(request: Request, name: str, caller: Pass = Depends(admin_caller)) -> Collection:
            return request.app.state.runtime.gate.reach(caller, name, need)
        return named_dep

    async def default_dep(request: Request, caller: Pass = Depends(admin_caller)) -> Collection:
        return request.app.state.runtime.gate.reach(caller, "default", need)
    return default_dep


@contextmanager
def lease(col: Collection) -> Iterator[Target]:
    """The collection's served bundle, leased: a swap meanwhile closes the old bundle only after the answer."""
    with col.served.lease() as bundle:
        if bundle is None:
            col.require_bundle()  # says why: deleted (404, e.g. while the request's body arrived), or loading (503)
            raise NotReady(f"collection {col.name} was loaded while this request began; retry",
                           headers={"Retry-After": "1"})
        yield Target(col, bundle)


def readable(request: Request, name: str) -> Collection:
    """The data plane's collection `name`, checked for reading with the request's pass: called before the body
    is read, so a caller who would be refused (401, 404) is not made to send, nor the server to parse, its body."""
    return request.app.state.runtime.gate.reach(data_pass(request), name, "read")


def leased(need: Granted, named: bool) -> Callable[..., AsyncIterator[Target]]:
    """Dependency: the collection and its served bundle, leased for the request."""
    find = collection(need, named)

    async def dep(col: Collection = Depends(find)) -> AsyncIterator[Target]:
        with lease(col) as target:
            yield target
    return dep


# the dependencies routes use, made once
WRITE, WRITE_NAMED = collection("write", False), collection("write", True)
WRITE_LEASED, WRITE_LEASED_NAMED = leased("write", False), leased("write", True)
ADMIN, ADMIN_NAMED = collection("admin", False), collection("admin", True)
