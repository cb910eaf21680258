"""One collection's shared state: its name, versions, served bundle and change lock, and why it cannot serve."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from whitevec.index.bundle import Bundle
from whitevec.index.lexical import BM25
from whitevec.index.versions import VersionStore

from .errors import NotFound, NotReady
from .serving import ServedBundle
from .settings import Settings


@dataclass(eq=False)
class CollectionState:
    """What a collection's parts (corpus operations, alias follower, reports) share, handed to each at
    construction: none of them holds the Collection that owns it.

    `change_lock` makes upserts, deletes and activations take turns: a change lands in the version that is
    served when it commits, and a rebuild's activation carries over what was committed while it ran."""

    name: str
    versions: VersionStore
    served: ServedBundle = field(default_factory=ServedBundle)
    change_lock: threading.RLock = field(default_factory=threading.RLock)
    deleted: bool = False  # set when deleted: requests and jobs that still hold it get 404
    refused: dict | None = None  # the active version, when it could not be served, and why
    load_error: str | None = None  # why the last load failed (retried with backoff)

    @property
    def bundle(self) -> Bundle | None:
        """The served bundle now (a request or job that keeps using it leases it: `served.lease()`)."""
        return self.served.current

    def require_bundle(self) -> Bundle:
        """The served bundle, or the error that says why there is none: deleted, loading, or failed to load."""
        bundle = self.bundle
        if self.deleted:
            raise NotFound(f"collection {self.name} was deleted", param="name")
        if bundle is None:
            raise NotReady(self.load_error or f"collection {self.name} is still loading; retry shortly",
                           headers={"Retry-After": "2"})
        return bundle


@dataclass(frozen=True)
class CollectionDefaults:
    """A collection's own settings (its collection.json) over the server's WHITEVEC_* ones: what a rebuild
    uses for what its request leaves out."""

    config: dict
    settings: Settings

    def whitening(self) -> dict[str, Any]:
        """(β, γ, dim), or `auto`: the collection's, else WHITEVEC_WHITEN_*."""
        s = self.settings
        return {"beta": s.whiten_beta, "gamma": s.whiten_gamma, "dim": s.whiten_dim, **(self.config.get("whitening") or {})}

    def index(self) -> dict[str, Any]:
        """The index spec fields: the collection's, else WHITEVEC_INDEX_TYPE."""
        return {"type": self.settings.index_type, **(self.config.get("index") or {})}

    def search(self) -> dict[str, Any]:
        """How /search searches when a request names no mode: the collection's setting, else dense."""
        return {"mode": "dense", **{k: v for k, v in (self.config.get("search") or {}).items() if k != "bm25"}}

    def passages(self) -> dict[str, Any] | None:
        """How its rebuilds split documents: {"max_tokens", "overlap"} (either may be null: from the model's max
        length), or None: one row per document."""
        return self.config.get("passages")

    def bm25(self) -> BM25:
        """The BM25 knobs its rebuilds give the lexical index: the collection's, else k1 1.2, b 0.75."""
        return BM25(**((self.config.get("search") or {}).get("bm25") or {}))
