"""A consistent copy of a data dir while its server runs: versions through their store, SQLite through its
online backup, the rest copied as files.

Each collection's versions are copied through `VersionStore.pinned()`: the pointer and the list of complete
versions are read together under the store's lock, and those versions are held against prune until the copy
ends, so the copied pointer always names a version the copy has. Built parts of a version never change
after commit, so they are copied byte for byte (their checksums are in the manifest). A change log
(`changes.sqlite`) may hold acknowledged changes only in its `-wal` file: copying the file alone would lose
them, so the live SQLite files (change logs, journals, job records, keys) are copied with SQLite's backup
API, which reads the WAL too. `changes.head` and `CHANGED` are copied before their log, so the copy's log
always replays at least what the head says (the server verifies that at load). The copy is a data dir:
serve it with `--data-dir`, at any path, in any venv (versions name their model relative to the data dir).
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from whitevec.models.errors import WhitevecError

from . import layout
from .changes import CHANGED_FILE, HEAD_FILE
from .parts import POINTER
from .versions import VersionStore

SKIP = {".lock", ".collections.lock", "milvus.db"}  # the holder's lock; Milvus data lives in Milvus (back it up there)
#: SQLite files that change while a server runs. Built parts (docs.sqlite) are copied byte for byte:
#: their checksums are in the version's manifest.
LIVE_SQLITE = {"changes.sqlite", "journal.sqlite", "jobs.sqlite", "keys.sqlite"}
FIRST = (HEAD_FILE, CHANGED_FILE)  # what a change log is checked against: copied before the log


def _copy_sqlite(src: Path, dst: Path) -> None:
    with closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)) as source, \
            closing(sqlite3.connect(dst)) as target:
        source.backup(target)


def _skipped(rel: Path) -> bool:
    """Locks, temp files, leftovers, pins, and versions/ below a collection (copied through its store)."""
    return (rel.parts[0] in SKIP or rel.parts[0] == "versions" or rel.name in SKIP or rel.name.endswith(("-wal", "-shm", ".tmp"))
            or any(part.startswith((".tmp-", ".deleting-", ".pin-")) for part in rel.parts))


class _Copier:
    """Copies files into the backup's temp folder and counts them."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.counts = {"files": 0, "sqlite": 0}

    def file(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.name in LIVE_SQLITE:
            _copy_sqlite(src, dst)
            self.counts["sqlite"] += 1
        else:
            shutil.copy2(src, dst)
            self.counts["files"] += 1

    def tree(self, src: Path, dst: Path) -> None:
        """Every file under `src`, the heads of change logs first; a file removed meanwhile is skipped."""
        paths = sorted(src.rglob("*"), key=lambda p: (p.name not in FIRST, str(p)))
        dst.mkdir(parents=True, exist_ok=True)
        for path in paths:
            rel = path.relative_to(src)
            if _skipped(rel):
                continue
            try:
                if path.is_dir():
                    (dst / rel).mkdir(parents=True, exist_ok=True)
                else:
                    self.file(path, dst / rel)
            except (FileNotFoundError, sqlite3.OperationalError):
                if path.exists():
                    raise


def _copy_versions(store_dir: Path, dst: Path, copier: _Copier) -> None:
    """One version store's pointer and versions, pinned against prune while they are copied."""
    store = VersionStore(store_dir)
    with store.pinned() as (pointer, versions):
        (dst / "versions").mkdir(parents=True, exist_ok=True)
        if pointer is not None:
            (dst / "versions" / POINTER).write_bytes(pointer)
        for version in versions:
            copier.tree(store.folder(version), dst / "versions" / version)
            if not store.folder(version).exists():  # a never-served version its failed job discarded
                shutil.rmtree(dst / "versions" / version, ignore_errors=True)


def backup(data_dir: Path, dest: Path) -> dict[str, int]:
    """Copy `data_dir` to `dest` (which must not exist); returns counts of files and SQLite databases.
    With WHITEVEC_BUNDLE_DIR set, back up the bundle dir (it holds collections/) as well as the data dir."""
    data_dir, dest = Path(data_dir), Path(dest)
    if not (data_dir / "versions").is_dir() and not (data_dir / layout.COLLECTIONS).is_dir():
        raise WhitevecError(f"{data_dir} holds no collections/: give the data dir a server uses (--data-dir), or its "
                            "WHITEVEC_BUNDLE_DIR when one is set")
    if dest.exists():
        raise WhitevecError(f"{dest} exists already: give a new folder for the backup")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    copier = _Copier(tmp)
    try:
        tmp.mkdir(parents=True)
        for path in sorted(data_dir.iterdir()):
            rel = Path(path.name)
            if path.name == "versions":  # a data dir from before collections: upgraded at its next start
                _copy_versions(data_dir, tmp, copier)
            elif _skipped(rel):
                continue
            elif path.name == layout.COLLECTIONS:
                for name in layout.names(data_dir):
                    folder, copy = layout.folder(data_dir, name), tmp / layout.COLLECTIONS / name
                    copier.tree(folder, copy)  # collection.json (versions/ is skipped: copied pinned)
                    if (folder / "versions").is_dir():
                        _copy_versions(folder, copy, copier)
                    if not (folder / "versions").is_dir():  # deleted while it was copied: not in the copy
                        shutil.rmtree(copy, ignore_errors=True)
            elif path.is_dir():
                copier.tree(path, tmp / rel)
            else:
                copier.file(path, tmp / rel)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return copier.counts
