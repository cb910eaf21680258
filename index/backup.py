"""A consistent copy of a data dir while its server runs: files copied, SQLite through its online backup.

Built parts of a version never change after commit, so they are copied byte for byte (their checksums
are in the manifest). A change log (`changes.sqlite`) may hold acknowledged changes only in its `-wal`
file: copying the file alone would lose them, so the live SQLite files (change logs, journals, job
records) are copied with SQLite's backup API, which reads the WAL too.
`changes.head` is copied before its log, so the copy's log always replays at least what the head
says (the server verifies that at load). The copy is a data dir: serve it with `--data-dir`.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

from whitevec.models.errors import WhitevecError

SKIP = {".lock", ".collections.lock", "milvus.db"}  # the holder's lock; Milvus data lives in Milvus (back it up there)
#: SQLite files that change while a server runs. Built parts (docs.sqlite) are copied byte for byte:
#: their checksums are in the version's manifest.
LIVE_SQLITE = {"changes.sqlite", "journal.sqlite", "jobs.sqlite", "keys.sqlite"}


def _copy_sqlite(src: Path, dst: Path) -> None:
    with closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)) as source, \
            closing(sqlite3.connect(dst)) as target:
        source.backup(target)


def backup(data_dir: Path, dest: Path) -> dict[str, int]:
    """Copy `data_dir` to `dest` (which must not exist); returns counts of files and SQLite databases.
    With WHITEVEC_BUNDLE_DIR set, back up the bundle dir (it holds versions/) as well as the data dir."""
    data_dir, dest = Path(data_dir), Path(dest)
    if not (data_dir / "versions").is_dir() and not (data_dir / "collections").is_dir():
        raise WhitevecError(f"{data_dir} holds no collections/: give the data dir a server uses (--data-dir), or its "
                            "WHITEVEC_BUNDLE_DIR when one is set")
    if dest.exists():
        raise WhitevecError(f"{dest} exists already: give a new folder for the backup")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"files": 0, "sqlite": 0}
    vanished: set[Path] = set()  # version folders pruned by the server while they were being copied
    try:
        paths = sorted(data_dir.rglob("*"), key=lambda p: (p.name != "changes.head", str(p)))  # heads first
        for src in paths:
            rel = src.relative_to(data_dir)
            if rel.parts[0] in SKIP or src.name in SKIP or src.name.endswith(("-wal", "-shm", ".tmp")) \
                    or any(part.startswith((".tmp-", ".deleting-")) for part in rel.parts):
                continue
            dst = tmp / rel
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                if src.name in LIVE_SQLITE:
                    _copy_sqlite(src, dst)
                    counts["sqlite"] += 1
                else:
                    shutil.copy2(src, dst)
                    counts["files"] += 1
            except (FileNotFoundError, sqlite3.OperationalError):
                if src.exists():
                    raise
                vanished.add(tmp / rel.parts[0] / rel.parts[1] if len(rel.parts) > 2 else dst)
        for path in vanished:  # never half a version in the copy: it was pruned, so it is not served either
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
