"""The caller's pass, and the one gate where the engine checks it before a collection is reached.

A pass that may not see a collection gets 404 for it, exactly as for one that does not exist: a tenant's
key must not learn which other collections a server holds. The HTTP layer turns a bearer token into a
pass here and reaches collections only through `Gate.reach` and `Gate.visible`, so no route can skip the
check (tests/test_layers.py fails on a route that asks the runtime for a collection directly).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import Forbidden, NotFound, Unauthorized
from .keys import AccessKey, KeyStore
from .metrics import Metrics
from .settings import Settings

if TYPE_CHECKING:  # the gate hands out collections; it never builds or imports their owner
    from .collection import Collection

Need = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class Pass:
    """What a caller's credential allows: everything (the admin token), reading every collection
    (WHITEVEC_API_KEY, or anyone while the server has no key of any kind), or an access key's scopes."""

    admin: bool = False
    reads_all: bool = False
    key: AccessKey | None = None

    def sees(self, collection: str) -> bool:
        return self.admin or self.reads_all or (self.key is not None and self.key.reads(collection))

    def writes(self, collection: str) -> bool:
        return self.admin or (self.key is not None and self.key.writes(collection))


#: The local operator: a command run on the server's own data dir (it holds the data dir's lock).
OPERATOR = Pass(admin=True)


def same_secret(a: str, b: str) -> bool:
    """Constant time, and blind to length: digests of equal size are compared."""
    return hmac.compare_digest(hashlib.sha256(a.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(b.encode("utf-8", "surrogatepass")).digest())


class Gate:
    """Owned by the runtime: turns a bearer token into a Pass, and a Pass and a collection name into the
    collection (or the error to answer). Refusals are counted in the `whitevec_auth_failures` metric."""

    def __init__(self, settings: Settings, admin_token: Callable[[], str], keys: KeyStore, metrics: Metrics,
                 find: Callable[[str], Collection | None], listing: Callable[[], list[Collection]],
                 check_open: Callable[[], None]) -> None:
        """`find`/`listing`: the runtime's registry; `check_open`: raises NotReady until the data dir is open."""
        self.settings = settings
        self._admin_token = admin_token
        self.keys = keys
        self.metrics = metrics
        self._find = find
        self._listing = listing
        self._check_open = check_open

    @property
    def open(self) -> bool:
        """Anyone may search and embed: WHITEVEC_READ_ACCESS=open, or `auto` while the server has neither
        WHITEVEC_API_KEY nor an access key, now or before (revoking every key does not reopen it)."""
        return self.read_access()["open"]

    def read_access(self) -> dict[str, str | bool]:
        """The read rule in force: the setting, whether searching is open now, and why, in words."""
        setting = self.settings.read_access
        if setting == "open":
            return {"setting": setting, "open": True, "why": "WHITEVEC_READ_ACCESS=open: anyone may search and embed "
                                                            "every collection; keys scope writes only"}
        if setting == "keys":
            return {"setting": setting, "open": False, "why": "WHITEVEC_READ_ACCESS=keys: searching and embedding "
                                                             "need an access key, WHITEVEC_API_KEY or the admin token"}
        if self.settings.api_key is not None:
            why = "WHITEVEC_API_KEY is set: searching and embedding need a credential"
        elif self.keys.any:
            why = ("an access key exists or existed: searching and embedding need a credential (revoking keys does "
                   "not reopen it; WHITEVEC_READ_ACCESS=open does)")
        else:
            return {"setting": setting, "open": True, "why": "no access key yet: anyone may search and embed; creating "
                                                            "the first key closes searching to credentials"}
        return {"setting": setting, "open": False, "why": why}

    def is_admin(self, token: str) -> bool:
        return same_secret(token, self._admin_token())

    def identify(self, token: str, wrong: str) -> Pass:
        """The pass a bearer token makes; Unauthorized(`wrong`) when it is none of the known credentials (a
        wrong or revoked one is no credential: 401, as for none; 403 is for a valid one without the right)."""
        if self.is_admin(token):
            return Pass(admin=True)
        api_key = self.settings.api_key
        if api_key is not None and same_secret(token, api_key.get_secret_value()):
            return Pass(reads_all=True)
        key = self.keys.check(token)
        if key is not None:
            return Pass(key=key)
        self.refused("wrong")
        raise Unauthorized(wrong)

    def refused(self, why: str) -> None:
        """Count a refusal (missing, wrong, not_admin, out_of_scope, read_only)."""
        self.metrics.auth_failures.labels(why).inc()

    def reach(self, caller: Pass, name: str, need: Need) -> Collection:
        """Collection `name` as `caller` may use it for `need`: 404 when unknown or out of the caller's
        sight, 403 when seen but not allowed."""
        col = self._find(name)
        self._check_open()
        if col is None or not caller.sees(name):
            if not caller.admin and not caller.reads_all:  # counted alike whether it exists: /metrics is open
                self.refused("out_of_scope")
            hint = "; GET /admin/collections lists them" if caller.admin else ""
            raise NotFound(f"no collection named {name[:100]!r}{hint}", param="name")
        if need == "write" and not caller.writes(name):
            self.refused("read_only")
            raise Forbidden(f"this credential may only read collection {name!r}: changing or reading its documents "
                            "needs a `write` access key or the admin token")
        if need == "admin" and not caller.admin:
            self.refused("not_admin")
            raise Forbidden(f"this needs the admin token (an access key may search, embed and, with write access, "
                            f"change documents of collection {name!r})")
        return col

    def visible(self, caller: Pass) -> list[Collection]:
        """The collections `caller` may see, by name."""
        return [c for c in self._listing() if caller.sees(c.name)]
