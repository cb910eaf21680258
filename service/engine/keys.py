"""Access keys: bearer keys scoped to collections, `read` or `write`; only their SHA-256 is stored.

A key reads `wvk_<id>_<secret>`. The id finds the record; the digest of the whole key is compared
in constant time. Records live in the jobs database when replicas share one (WHITEVEC_JOBS_DB), else in
`keys.sqlite` in the bundle dir (the data dir, or the folder replicas share); each process keeps a copy
in memory, refreshed by the runtime's sync thread (WHITEVEC_ALIAS_POLL_S): a revocation holds at once on
the replica that made it and within one poll on the others.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from .clock import iso
from .database import Database

Access = Literal["read", "write"]
PREFIX = "wvk_"
_UNKNOWN = hashlib.sha256(b"no such key").hexdigest()  # compared against when the id is unknown
TOUCH_EVERY_S = 60.0  # last-used times are written at most this often per key


@dataclass(frozen=True)
class AccessKey:
    id: str
    digest: str
    collections: tuple[str, ...]
    access: Access
    name: str | None
    created_at: float

    def reads(self, collection: str) -> bool:
        return collection in self.collections

    def writes(self, collection: str) -> bool:
        return self.access == "write" and collection in self.collections


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """Creates, lists, revokes and checks access keys (table `access_keys` of the jobs database)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()  # the in-memory copy, held for dict access only
        self._writes = threading.Lock()  # a refresh never brings back a key revoked while it read
        self._keys: dict[str, AccessKey] = {}
        self._used: dict[str, float] = {}  # last use seen here, not yet written
        self._written: dict[str, float] = {}
        self._ever = False  # a key was ever made here: revoking the last one must not open the server
        real = db.real
        with db.transaction() as execute:
            execute(f"""CREATE TABLE IF NOT EXISTS access_keys (
                id TEXT PRIMARY KEY, digest TEXT NOT NULL, collections TEXT NOT NULL, access TEXT NOT NULL,
                name TEXT, created_at {real} NOT NULL, last_used_at {real}, revoked_at {real})""")
        self.refresh()

    @property
    def any(self) -> bool:
        """A key exists or existed (revoked ones are kept as records): data routes then need a credential."""
        return self._ever or bool(self._keys)

    def create(self, collections: list[str], access: Access, name: str | None) -> dict[str, Any]:
        """A new key, returned once with its secret."""
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        record = AccessKey(key_id, _digest(key), tuple(dict.fromkeys(collections)), access, name, time.time())
        with self._writes:
            with self.db.transaction() as execute:
                execute("INSERT INTO access_keys (id, digest, collections, access, name, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (key_id, record.digest, json.dumps(record.collections), access,
                                                      name, record.created_at))
            with self._lock:
                self._keys[key_id] = record
                self._ever = True
        return {"id": key_id, "key": key, **self._public(record, None)}

    def list(self) -> list[dict[str, Any]]:
        """Every key, without secrets or digests."""
        with self.db.transaction() as execute:
            rows = execute("SELECT id, last_used_at FROM access_keys WHERE revoked_at IS NULL")
        stored = dict(rows)
        with self._lock:
            keys = sorted(self._keys.values(), key=lambda k: k.created_at)
            used = dict(self._used)
        return [{"id": k.id, **self._public(k, max(filter(None, (stored.get(k.id), used.get(k.id))), default=None))}
                for k in keys]

    @staticmethod
    def _public(k: AccessKey, last_used: float | None) -> dict[str, Any]:
        return {"name": k.name, "collections": list(k.collections), "access": k.access,
                "created_at": iso(k.created_at), "last_used_at": iso(last_used)}

    def revoke(self, key_id: str) -> bool:
        """Refused from now on, here; on other replicas within one refresh. The record stays, marked revoked
        (so the server never turns open again by losing its last key); False if no live key has that id."""
        with self._writes:
            with self.db.transaction() as execute:
                found = execute("SELECT id FROM access_keys WHERE id=? AND revoked_at IS NULL", (key_id,))
                execute("UPDATE access_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                        (time.time(), key_id))
            with self._lock:
                self._keys.pop(key_id, None)
                self._used.pop(key_id, None)
        return bool(found)

    def forget_collection(self, name: str) -> None:
        """A deleted collection leaves every key's scope (as stored, not only as known here): one created
        again later under that name is new."""
        with self._writes:
            with self.db.transaction() as execute:
                for key_id, collections in execute("SELECT id, collections FROM access_keys"):
                    scope = json.loads(collections)
                    if name in scope:
                        execute("UPDATE access_keys SET collections=? WHERE id=?",
                                (json.dumps([c for c in scope if c != name]), key_id))
        self.refresh()

    def check(self, presented: str) -> AccessKey | None:
        """The key `presented` is, or None; the digest comparison takes the same time either way."""
        parts = presented.split("_", 2) if presented.startswith(PREFIX) else []
        with self._lock:
            record = self._keys.get(parts[1]) if len(parts) == 3 else None
        ok = hmac.compare_digest(_digest(presented), record.digest if record is not None else _UNKNOWN)
        if not ok or record is None:
            return None
        now = time.time()
        with self._lock:
            self._used[record.id] = now
        return record

    def refresh(self) -> None:
        """Re-read the records (other replicas' creations and revocations); write recent last-used times."""
        now = time.time()
        with self._writes:
            with self._lock:
                due = {i: t for i, t in self._used.items() if t - self._written.get(i, 0) >= TOUCH_EVERY_S}
            with self.db.transaction() as execute:
                for key_id, at in due.items():
                    execute("UPDATE access_keys SET last_used_at=? WHERE id=?", (at, key_id))
                rows = execute("SELECT id, digest, collections, access, name, created_at, revoked_at FROM access_keys")
            keys = {r[0]: AccessKey(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5]) for r in rows
                    if r[6] is None}
            with self._lock:
                self._keys = keys
                self._ever = self._ever or bool(rows)
                self._written.update({i: now for i in due})
