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
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whitevec.models.errors import WhitevecError
from whitevec.models.files import fsync_path, write_json_atomic
from whitevec.models.loader import bundled_model_dir

from . import naming

DEFAULT = "default"
COLLECTIONS = "collections"
CONFIG = "collection.json"
class CollectionExists(WhitevecError):
    """PUT of a collection that exists already."""


def root(data_root: Path) -> Path:
    return Path(data_root) / COLLECTIONS


def folder(data_root: Path, name: str) -> Path:
    return root(data_root) / naming.check("collection", name)


@contextmanager
def layout_lock(data_root: Path) -> Iterator[None]:
    """Creating, deleting and upgrading collections take turns across replicas sharing a bundle dir."""
    Path(data_root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(data_root) / ".collections.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(data_root: Path) -> bool:
    """Make an old data dir's `versions/` the collection `default` (one rename); True when it did.
    Safe to re-run after a crash at any point: until the rename the old layout is intact."""
    data_root = Path(data_root)
    old, new = data_root / "versions", folder(data_root, DEFAULT) / "versions"
    with layout_lock(data_root):
        if not old.is_dir():
            return False
        if new.exists():
            raise WhitevecError(f"{data_root} holds both versions/ (the layout before collections) and "
                                f"{COLLECTIONS}/{DEFAULT}/versions/: move one of them away, then start again")
        new.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old, new)
        fsync_path(new.parent)
        fsync_path(data_root)
        return True


def names(data_root: Path) -> list[str]:
    """Collections present (complete folders), sorted."""
    base = root(data_root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and naming.valid("collection", p.name))


def model_folder(data_root: Path, model: str | None) -> Path | None:
    """A collection's `model` as a folder: None (the server's configured one), the bundled one, or a
    fine-tune in the bundle dir's models/."""
    if model is None:
        return None
    return bundled_model_dir() if model == "bundled" else Path(data_root) / "models" / model


def read_config(data_root: Path, name: str) -> dict:
    """A collection's stored settings. When its file is missing or unreadable the server's settings apply,
    and `problem` says so (shown in /readyz as a degraded collection, never silently). `uid` tells a
    collection from a later one of the same name."""
    path = folder(data_root, name) / CONFIG
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


def read_uid(data_root: Path, name: str) -> str | None:
    """A collection's uid as its file says (its name when the file has none, as `default`'s may not);
    None when the file cannot be read now: a transient failure must not read as "deleted"."""
    try:
        data = json.loads((folder(data_root, name) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(data.get("uid", name)) if isinstance(data, dict) else None


def create(data_root: Path, name: str, config: dict) -> Path:
    """Write a new collection's folder atomically; CollectionExists if the name is taken."""
    target = folder(data_root, name)
    with layout_lock(data_root):
        if target.exists():
            raise CollectionExists(f"collection {name!r} exists already; DELETE /admin/collections/{name}?confirm=true "
                                   "first, or choose another name")
        tmp = root(data_root) / f".tmp-{name}-{secrets.token_hex(3)}"
        (tmp / "versions").mkdir(parents=True)
        write_json_atomic(tmp / CONFIG, {"name": name, "uid": secrets.token_hex(8), "created_at": time.time(),
                                         **config})
        os.rename(tmp, target)
        fsync_path(root(data_root))
    return target


def update(data_root: Path, name: str, changes: dict) -> dict:
    """Change some of a collection's stored settings (one atomic write); returns them all. A file that cannot
    be read is not rewritten (its other settings would be lost): OSError or ValueError names it."""
    path = folder(data_root, name) / CONFIG
    with layout_lock(data_root):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold an object")
        data.update(changes)
        write_json_atomic(path, data)
    return data


def ensure_default(data_root: Path) -> None:
    """The collection `default` always exists (its settings come from the server's)."""
    target = folder(data_root, DEFAULT)
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


def retire(data_root: Path, name: str) -> Path:
    """Take a collection out of the layout in one rename; the caller removes the returned folder."""
    with layout_lock(data_root):
        src = folder(data_root, name)
        if not src.is_dir():  # deleted meanwhile (another request, another replica)
            raise KeyError(name)
        dst = root(data_root) / f".deleting-{name}-{secrets.token_hex(3)}"
        os.rename(src, dst)
        fsync_path(root(data_root))
    return dst


def leftovers(data_root: Path) -> list[Path]:
    """Folders a crash left: collections half created (.tmp-*) or half deleted (.deleting-*)."""
    base = root(data_root)
    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".deleting-"))]


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
