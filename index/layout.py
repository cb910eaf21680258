"""Where collections live in a bundle dir, and the in-place upgrade from the one-corpus layout.

    bundle_dir/collections/<name>/collection.json   {"name", "model", "whitening", "index", "created_at"}
    bundle_dir/collections/<name>/versions/...      that collection's versions (index/versions.py)
    bundle_dir/models/...                            fine-tuned models, shared by every collection

A data dir written before collections holds `bundle_dir/versions/`: at start it becomes the collection
`default` with one rename (crash-safe: before it the old layout is whole, after it the new one). A
collection is created under `.tmp-<name>-*` and renamed into place; it is deleted by renaming it to
`.deleting-<name>-*` first, so a crash mid-delete never leaves half a collection that looks alive.
"""

from __future__ import annotations

import calendar
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whitevec.models.errors import WhitevecError
from whitevec.models.files import fsync_path, write_json_atomic
from whitevec.models.loader import bundled_model_dir

DEFAULT = "default"
COLLECTIONS = "collections"
CONFIG = "collection.json"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # fullmatch: no trailing newline slips through


class BadCollectionName(WhitevecError):
    """A collection name outside [a-z0-9][a-z0-9_-]{0,62}."""


class CollectionExists(WhitevecError):
    """PUT of a collection that exists already."""


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise BadCollectionName(f"collection name {name[:80]!r} is not allowed: use 1 to 63 lowercase letters, digits, "
                                "'_' or '-', starting with a letter or digit")
    return name


def root(bundles: Path) -> Path:
    return Path(bundles) / COLLECTIONS


def folder(bundles: Path, name: str) -> Path:
    return root(bundles) / check_name(name)


@contextmanager
def layout_lock(bundles: Path) -> Iterator[None]:
    """Creating, deleting and upgrading collections take turns across replicas sharing a bundle dir."""
    Path(bundles).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(bundles) / ".collections.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(bundles: Path) -> bool:
    """Make an old data dir's `versions/` the collection `default` (one rename); True when it did.
    Safe to re-run after a crash at any point: until the rename the old layout is intact."""
    bundles = Path(bundles)
    old, new = bundles / "versions", folder(bundles, DEFAULT) / "versions"
    with layout_lock(bundles):
        if not old.is_dir():
            return False
        if new.exists():
            raise WhitevecError(f"{bundles} holds both versions/ (the layout before collections) and "
                                f"{COLLECTIONS}/{DEFAULT}/versions/: move one of them away, then start again")
        new.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old, new)
        fsync_path(new.parent)
        fsync_path(bundles)
        return True


def names(bundles: Path) -> list[str]:
    """Collections present (complete folders), sorted."""
    base = root(bundles)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and NAME.fullmatch(p.name))


def model_folder(bundles: Path, model: str | None) -> Path | None:
    """A collection's `model` as a folder: None (the server's configured one), the bundled one, or a
    fine-tune in the bundle dir's models/."""
    if model is None:
        return None
    return bundled_model_dir() if model == "bundled" else Path(bundles) / "models" / model


def read_config(bundles: Path, name: str) -> dict:
    """A collection's stored settings. When its file is missing or unreadable the server's settings apply,
    and `problem` says so (shown in /readyz as a degraded collection, never silently). `uid` tells a
    collection from a later one of the same name."""
    path = folder(bundles, name) / CONFIG
    problem = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data, problem = None, f"{CONFIG} is missing"
    except (OSError, ValueError) as exc:
        data, problem = None, f"{CONFIG} is unreadable ({getattr(exc, 'strerror', None) or exc})"
    if data is not None and not isinstance(data, dict):
        data, problem = None, f"{CONFIG} does not hold an object"
    config = {"name": name, "uid": name, **(data or {})}
    if problem:  # its stored settings (model, whitening, index) are unknown: the server's apply meanwhile
        config["problem"] = (f"collections/{name}/{problem}: its settings (model, whitening, index) are the "
                             "server's until the file is restored from a backup (`whitevec backup`)")
    return config


def read_uid(bundles: Path, name: str) -> str | None:
    """A collection's uid as its file says (its name when the file has none, as `default`'s may not);
    None when the file cannot be read now: a transient failure must not read as "deleted"."""
    try:
        data = json.loads((folder(bundles, name) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(data.get("uid", name)) if isinstance(data, dict) else None


def create(bundles: Path, name: str, config: dict) -> Path:
    """Write a new collection's folder atomically; CollectionExists if the name is taken."""
    target = folder(bundles, name)
    with layout_lock(bundles):
        if target.exists():
            raise CollectionExists(f"collection {name!r} exists already; DELETE /admin/collections/{name}?confirm=true "
                                   "first, or choose another name")
        tmp = root(bundles) / f".tmp-{name}-{secrets.token_hex(3)}"
        (tmp / "versions").mkdir(parents=True)
        write_json_atomic(tmp / CONFIG, {"name": name, "uid": secrets.token_hex(8), "created_at": time.time(),
                                         **config})
        os.rename(tmp, target)
        fsync_path(root(bundles))
    return target


def ensure_default(bundles: Path) -> None:
    """The collection `default` always exists (its settings come from the server's)."""
    target = folder(bundles, DEFAULT)
    if not (target / CONFIG).is_file():
        (target / "versions").mkdir(parents=True, exist_ok=True)
        versions = sorted(p.name for p in (target / "versions").iterdir() if not p.name.startswith("."))
        created = _version_time(versions[0]) if versions else time.time()
        write_json_atomic(target / CONFIG, {"name": DEFAULT, "uid": "default", "created_at": created, "model": None,
                                            "whitening": None, "index": None})


def _version_time(version: str) -> float:
    """A version id starts with its UTC creation time."""
    try:
        return float(calendar.timegm(time.strptime(version[:15], "%Y%m%dT%H%M%S")))
    except ValueError:
        return time.time()


def retire(bundles: Path, name: str) -> Path:
    """Take a collection out of the layout in one rename; the caller removes the returned folder."""
    with layout_lock(bundles):
        src = folder(bundles, name)
        if not src.is_dir():  # deleted meanwhile (another request, another replica)
            raise KeyError(name)
        dst = root(bundles) / f".deleting-{name}-{secrets.token_hex(3)}"
        os.rename(src, dst)
        fsync_path(root(bundles))
    return dst


def leftovers(bundles: Path) -> list[Path]:
    """Folders a crash left: collections half created (.tmp-*) or half deleted (.deleting-*)."""
    base = root(bundles)
    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".deleting-"))]


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
