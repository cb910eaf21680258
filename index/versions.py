"""A collection's versions on disk: model + whitening + FAISS index + documents, one folder each.

    data_dir/versions/<version>/manifest.json   ids, parameters, sizes and SHA-256 of every part
                               /whitening.npz
                               /index.faiss
                               /docs.sqlite
                               /raw.npy         pooled vectors before whitening (re-whitening, changes)
                               /changes.sqlite  upserts and deletes since the build (index/changes.py)
    data_dir/versions/ACTIVE                    {"version", "activated_at", "history": [...]}
    data_dir/.lock                              held by the one process using the data dir (datadir.py)

`versions/` lies in WHITEVEC_BUNDLE_DIR when one is set (default: the data dir); replicas on
the Milvus backend share that folder, each keeping its own locked data dir.

A version is written under `.tmp-<version>`, fsynced, renamed into place, and only
then named by ACTIVE, which is replaced atomically (temp file, fsync, os.replace).
A crash at any moment therefore leaves the previous version active and whole.

Loading verifies every part against the manifest (size, checksum) and the loaded parts
against each other (vector count, dims, whitening version): a damaged or mixed-up
version is refused (VersionDamaged), never served. ACTIVE carries the activation
history, so pruning keeps what was actually served, newest first.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whitevec.models.encoder import EncoderPool
from whitevec.models.errors import WhitevecError
from whitevec.models.files import fsync_path, write_json_atomic

from . import naming
from .layout import COLLECTIONS
from .loading import load_version
from .parts import MANIFEST, MILVUS_PARTS, PARTS, POINTER, VersionDamaged, file_digest
from .target import FILES, IndexTarget

log = logging.getLogger(__name__)

HISTORY_LIMIT = 100
PIN_PREFIX = ".pin-"  # a backup's hold on the versions it copies (VersionStore.pinned)
#: In a shared bundle dir, leftovers younger than this may be another replica's build in progress.
SHARED_STALE_S = 24 * 3600


class ServedVersionChanged(WhitevecError):
    """A job read one version, and another was activated before the job could activate its own."""


class VersionStore:
    def __init__(self, bundle_dir: Path, target: IndexTarget = FILES, shared: bool = False,
                 encoders: EncoderPool | None = None) -> None:
        self.root = Path(bundle_dir) / "versions"
        self.root.mkdir(parents=True, exist_ok=True)
        self.target = target  # where new versions keep their index, and the switch activation moves
        self.encoders = encoders  # shared with other collections: one copy of each model
        self.shared = shared  # other processes write here too: cleanup leaves their fresh work alone
        self._lock = threading.RLock()
        self._pending: set[str] = set()  # committed by this process, its activation still to come

    def target_for(self, backend: str) -> IndexTarget:
        """The target that opens a version built on `backend`: this store's own, or files (a Milvus process
        still serves versions built on FAISS); VersionDamaged for a backend this process has not opened."""
        for target in (self.target, FILES):
            if target.backend == backend:
                return target
        raise VersionDamaged(f"this version keeps its index in {backend}: set WHITEVEC_INDEX_BACKEND={backend} "
                             "(and its URI) to serve it")

    def drop_all_indexes(self) -> None:
        """Before a deleted collection's folder goes: what its versions keep outside it (Milvus collections,
        the alias)."""
        self.target.drop_all(self.root)

    @property
    def models_root(self) -> Path:
        """The data dir's models/ (fine-tunes, shared by its collections): what `models/<name>` refs name."""
        holder = self.root.parent  # collections/<name>, or the data dir itself before collections
        return (holder.parent.parent if holder.parent.name == COLLECTIONS else holder) / "models"

    def model_section(self, version: str, manifest: dict) -> dict:
        """The manifest's model section with a `ref`. A version from before refs names its model by the
        absolute path it had at build: when that is the bundled model or one of this data dir's fine-tunes
        (the same weights, by fingerprint), the manifest is upgraded in place to say so, and the data dir
        moves freely from then on; a user's own folder keeps its path."""
        model = dict(manifest["model"])
        if "ref" in model:
            return model
        ref = self._guess_ref(model)
        if ref is None:
            return model
        model["ref"] = ref
        try:
            with self.locked():
                write_json_atomic(self.folder(version) / MANIFEST, {**manifest, "model": model})
        except OSError as exc:  # served all the same; the upgrade is tried again at the next load
            log.warning("version %s: could not record its model as %r (%s)", version, ref, exc)
            return model
        log.info("version %s: its model is now named %r (was the path %s)", version, ref, model.get("path"))
        return model

    def _guess_ref(self, model: dict) -> str | None:
        from whitevec.models.loader import bundled_model_dir, fingerprint

        want = model.get("fingerprint")
        candidates = [("bundled", bundled_model_dir())]
        name = Path(model.get("path", "")).name
        if name:
            candidates.append((f"models/{name}", self.models_root / name))
        for ref, folder in candidates:
            try:
                if (folder / "config.json").is_file() and fingerprint(folder) == want:
                    return ref
            except (OSError, WhitevecError):
                continue
        return None

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The pointer, pending markers and pruning change under one lock: this process's threads
        (an RLock) and, in a shared bundle dir, other replicas (an flock on versions/.lock)."""
        with self._lock:
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    @contextmanager
    def pinned(self) -> Iterator[tuple[bytes | None, list[str]]]:
        """ACTIVE's bytes and the complete versions, read together and held against prune (in this process
        and in any other, through a pin file under an flock) until the block ends: what a backup copies.
        A pin whose holder died is unlocked, and the next prune removes it."""
        with self.locked():
            try:
                pointer = self.pointer.read_bytes()
            except FileNotFoundError:
                pointer = None
            versions = self.versions()
            pin = self.root / f"{PIN_PREFIX}{secrets.token_hex(6)}"
            fd = os.open(pin, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps(versions).encode())
        try:
            yield pointer, versions
        finally:
            pin.unlink(missing_ok=True)
            os.close(fd)

    def _pinned_versions(self) -> set[str]:
        """Versions a live pin holds (lock held); pins left by a process that died are removed."""
        held: set[str] = set()
        for pin in self.root.glob(f"{PIN_PREFIX}*"):
            try:
                fd = os.open(pin, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # its holder is copying now
                    held |= set(json.loads(pin.read_text(encoding="utf-8") or "[]"))
                else:
                    pin.unlink(missing_ok=True)
            except (OSError, ValueError):
                continue
            finally:
                os.close(fd)
        return held

    def pointer_state(self) -> tuple[dict, str | None]:
        """ACTIVE's data, and what is wrong with it (None when it names a complete version).
        Never raises and never names an absolute path: a bad pointer must not stop a server."""
        if not self.pointer.is_file():
            return {}, (None if not self.versions() else "versions/ACTIVE is missing")
        try:
            data = json.loads(self.pointer.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("version"), str):
                raise ValueError("it does not hold {\"version\": …}")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc).split(": line")[0]
            return {}, f"versions/ACTIVE is unreadable ({reason})"
        if not naming.valid("version", data["version"]):
            return data, (f"versions/ACTIVE names {data['version'][:80]!r}, which is not a version name (a version "
                          "is a folder of versions/, named by its id)")
        if not (self.folder(data["version"]) / MANIFEST).is_file():
            return data, f"versions/ACTIVE names version {data['version']}, which does not exist"
        return data, None

    def active(self) -> str | None:
        """The version ACTIVE names, when it names a complete one."""
        data, problem = self.pointer_state()
        return None if problem else data.get("version")

    def history(self) -> list[dict]:
        """Activations, newest first: [{"version", "activated_at"}] (the active one is first)."""
        data, _ = self.pointer_state()
        history = [h for h in data.get("history") or [] if isinstance(h, dict) and isinstance(h.get("version"), str)
                   and naming.valid("version", h["version"])]
        if naming.valid("version", data.get("version")) and (not history or history[0].get("version") != data["version"]):
            history.insert(0, {"version": data["version"], "activated_at": data.get("activated_at")})
        return history

    def folder(self, version: str) -> Path:
        """A version's folder: always inside versions/ (a name with a path in it is damage, never followed)."""
        if not naming.valid("version", version):
            raise VersionDamaged(f"{version[:80]!r} is not a version name: a version is a folder of versions/, "
                                 "named by its id")
        return self.root / version

    def versions(self) -> list[str]:
        """Complete versions, oldest first (ids start with a UTC timestamp to the microsecond); none when the
        folder is gone (its collection was deleted meanwhile)."""
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        return sorted(p.name for p in entries if naming.valid("version", p.name) and p.is_dir() and (p / MANIFEST).is_file())

    def new_version(self) -> tuple[str, Path]:
        now = time.time()
        version = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{int(now % 1 * 1e6):06d}-{secrets.token_hex(2)}"
        tmp = self.root / f".tmp-{version}"
        tmp.mkdir()
        return version, tmp

    def commit(self, version: str, tmp: Path, manifest: dict) -> Path:
        """Make a fully written temp folder a version (manifest last, then one rename). It stays
        pending (never pruned) until it is activated or `settle`d."""
        for name in os.listdir(tmp):
            fsync_path(tmp / name)
        write_json_atomic(tmp / MANIFEST, manifest)
        final = self.folder(version)
        with self.locked():
            os.rename(tmp, final)
            fsync_path(self.root)
            self._pending.add(version)
        return final

    def discard(self, version: str) -> None:
        """Delete a committed version that will never be served (its job failed before activating it)."""
        with self.locked():
            self._pending.discard(version)
            data, _ = self.pointer_state()
            if data.get("version") != version:
                self.target.drop(self.folder(version))
                shutil.rmtree(self.folder(version), ignore_errors=True)

    def activate(self, version: str, expected: str | None = None) -> None:
        """Point ACTIVE (and, with Milvus, the alias) at a complete version. The alias flips first: if
        that fails, ACTIVE still names what every replica serves.

        `expected`: a compare-and-swap for replicas. The shared alias must still name that version (the one a
        job read its corpus from), else ServedVersionChanged and nothing moves; compared under the bundle dir's
        lock, so one replica never flips the alias back over another's activation (and drops the writes
        acknowledged there)."""
        with self.locked():
            if not (self.folder(version) / MANIFEST).is_file():
                raise WhitevecError(f"version {version} is not complete; refusing to activate it")
            if expected is not None and self.target.followable:  # one process: its served bundle was checked already
                current = self.switched_to()
                if current is not None and current != expected:
                    raise ServedVersionChanged(f"version {current} was activated while this job ran (it read version "
                                               f"{expected}); nothing was activated: run the job again")
            self.target.point(self.folder(version))  # a shared switch flips first: every replica with it
            now = time.time()
            _, problem = self.pointer_state()
            # a lost pointer lost its history: rebuild one from the versions on disk, newest first, so the
            # prune after this activation keeps WHITEVEC_KEEP_VERSIONS of them instead of only two
            known = self.history() if problem is None else [{"version": v, "activated_at": None}
                                                            for v in self.newest_versions()]
            history = [h for h in known if h.get("version") != version]
            history.insert(0, {"version": version, "activated_at": now})
            write_json_atomic(self.pointer, {"version": version, "activated_at": now,
                                             "history": history[:HISTORY_LIMIT]})
            self._pending.discard(version)

    @property
    def followable(self) -> bool:
        """Replicas share a switch (the Milvus alias) that another process may move."""
        return self.target.followable

    def switched_to(self) -> str | None:
        """The version the shared switch names (None without one, or while it is unset); VersionDamaged
        when it names an index no version here describes."""
        return self.target.switched_to([(v, self.folder(v)) for v in reversed(self.versions())])

    def changes_report(self, version: str, manifest: dict) -> dict:
        """A version's changes since its build and its live count, read from disk (not served here)."""
        try:
            target = self.target_for(manifest.get("backend", FILES.backend))
        except VersionDamaged as exc:
            return {"damaged": str(exc)}
        return target.report(self.folder(version), manifest)

    def manifest(self, version: str) -> dict:
        return json.loads((self.folder(version) / MANIFEST).read_text(encoding="utf-8"))

    def newest_versions(self) -> list[str]:
        """Complete versions in the order a server tries them when ACTIVE cannot be used: activations
        newest first, then the never-activated ones, newest first."""
        history = [h["version"] for h in self.history()]
        return list(dict.fromkeys([v for v in history if (self.folder(v) / MANIFEST).is_file()]
                                  + list(reversed(self.versions()))))

    def cleanup_partial(self) -> list[str]:
        """At start (data dir locked): remove what a crashed rebuild provably left behind — temp folders
        and temp files (in a shared bundle dir, only those older than a day). A complete version is never
        removed here, whatever ACTIVE says: a missing or damaged pointer must not cost any data."""
        removed = []
        with self.locked():
            for path in self.root.iterdir():
                if not self.stale(path):
                    continue
                if path.name.startswith(".tmp-"):
                    self.target.discard(path.name[len(".tmp-"):])
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path.name)
                elif path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
        return removed

    def stale(self, path: Path) -> bool:
        """Removable as a leftover: always in a private bundle dir; in a shared one only when older than
        SHARED_STALE_S, since a younger one may be another replica's build about to be activated."""
        return self.stale_path(path, self.shared)

    @staticmethod
    def stale_path(path: Path, shared: bool) -> bool:
        if not shared:
            return True
        try:
            return path.stat().st_mtime <= time.time() - SHARED_STALE_S
        except FileNotFoundError:  # another replica removed it meanwhile
            return False

    def prune(self, keep: int, protect: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Keep the `keep` most recently activated versions (always the active and the previously
        active one, any in `protect`, and any pending activation); delete the rest, never-activated
        ones first. Does nothing while ACTIVE is missing or damaged: its history is what decides."""
        with self.locked():
            _, problem = self.pointer_state()
            if problem:
                return []
            history = [h["version"] for h in self.history() if (self.folder(h["version"]) / MANIFEST).is_file()]
            kept = set(history[: max(keep, 2)]) | set(protect) | self._pending | self._pinned_versions()
            kept |= {v for v in self.versions() if v not in history and not self.stale(self.folder(v))}
            doomed = [v for v in self.versions() if v not in kept]
            for version in doomed:
                self.target.drop(self.folder(version))
                shutil.rmtree(self.folder(version), ignore_errors=True)
        return doomed

    def verify_files(self, version: str) -> dict:
        """The manifest, after checking every part's size and SHA-256 against it (VersionDamaged if not)."""
        folder = self.folder(version)
        try:
            manifest = self.manifest(version)
        except (OSError, ValueError) as exc:
            raise VersionDamaged(f"version {version}: manifest.json is unreadable ({exc})") from exc
        parts = manifest.get("parts")
        if parts is None:
            log.warning("version %s predates checksums; checking counts and dims only", version)
            return manifest
        required = MILVUS_PARTS if manifest.get("backend") == "milvus" else PARTS
        for name in dict.fromkeys([*required, *parts]):  # the required parts, and the optional ones it lists
            path, want = folder / name, parts.get(name)
            if want is None or not path.is_file():
                raise VersionDamaged(f"version {version}: {name} is missing")
            size = path.stat().st_size
            if size != want["bytes"]:
                raise VersionDamaged(f"version {version}: {name} has {size} bytes, the manifest says {want['bytes']}")
            if file_digest(path) != want["sha256"]:
                raise VersionDamaged(f"version {version}: {name} does not match its checksum (damaged, or copied "
                                     "from another version)")
        return manifest

    load = load_version  # store.load(version, encoder, ...): see index.loading.load_version
