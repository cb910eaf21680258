"""The service's owner and its lifecycle: data dir, collections, shared encoders, jobs, keys and replicas."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from whitevec.index import layout, naming
from whitevec.index.backends import IndexBackend
from whitevec.index.bundle import resolve_model_ref
from whitevec.index.datadir import SERVER, DataDirLock
from whitevec.index.versions import VersionStore
from whitevec.models.encoder import EncoderPool
from whitevec.models.errors import WhitevecError

from .access import Gate, Pass
from .admin_token import AdminToken
from .batcher import Batcher
from .collection import Collection, Shared, resolve_model_choice
from .errors import Conflict, Forbidden, InvalidRequest, NotReady
from .database import POSTGRES, Database, check_sqlite
from .jobs import JobRunner
from .keys import KeyStore
from .metrics import Metrics
from .settings import Settings
from .training_runs import TrainingSupervisor

log = logging.getLogger("whitevec")

DEMO_CORPUS = Path(__file__).resolve().parent.parent / "demo" / "corpus.jsonl"


class Runtime:
    """The service's owner: settings, the data-dir lock, the collections (each with its versions and
    served bundle), the encoders they share, the batcher, jobs, access keys and the sync thread that
    follows other replicas. Opens the data dir (upgrading its layout), loads, creates and deletes collections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = IndexBackend(settings.index_backend, settings.data_root, shared=settings.bundle_dir is not None,
                                    **settings.backend_options)  # refuses a wrong combination before any mkdir
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.import_dir.mkdir(parents=True, exist_ok=True)
        settings.data_root.mkdir(parents=True, exist_ok=True)
        self.backend.open()
        self.encoders = EncoderPool()
        self._lock = DataDirLock(settings.data_dir)
        # keys live where every replica reads them: the shared jobs database, else the (shared) bundle dir
        self.jobs = JobRunner(self._jobs_db(settings), owner=settings.replica_name or self._default_replica(settings),
                              quarantine=settings.jobs_db is None)
        if settings.jobs_db is None:
            keys = settings.data_root / "keys.sqlite"
            check_sqlite(keys, "access keys", "restore it from a backup (`whitevec backup`); moving it away starts "
                         "with no access keys, so searching is open again until you create them anew")
        self.keys = KeyStore(self.jobs.db if settings.jobs_db is not None else Database(keys))
        self.metrics = Metrics()
        self.batcher = Batcher(settings.max_batch, settings.max_batch_tokens, settings.max_queue_tokens,
                               on_batch=self.metrics.observe_batch)
        self.metrics.bind(lambda: self.batcher.pending, self._documents_by_collection, self.jobs.counts)
        self.token = AdminToken(settings.admin_token.get_secret_value() if settings.admin_token else None,
                                settings.data_dir)
        self._token_announced = False
        self._collections: dict[str, Collection] = {}
        self._registry = threading.RLock()  # creating, deleting and discovering collections
        self._deleting: set[str] = set()
        self.opened = False
        self.loaded = False
        self.load_error: str | None = None  # why the data dir could not be opened
        # Upserts and deletes run here, one at a time, not in the default thread pool that searches use.
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="whitevec-writer")
        self.training = TrainingSupervisor(settings, self.encoders, self.prune_models)
        self.gate = Gate(settings, self.token.current, self.keys, self.metrics, self.collection, self.collections,
                         self._check_open)
        self._shared = Shared(settings, self.backend, self.encoders, lambda: self.jobs.busy, self.prune_models)
        self._sync_stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    @staticmethod
    def _default_replica(settings: Settings) -> str:
        """Host name and a digest of the data dir: unique per replica, without showing the path in job records."""
        digest = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"

    @staticmethod
    def _jobs_db(settings: Settings) -> str | Path:
        if settings.jobs_db is None:
            return settings.data_dir / "jobs.sqlite"
        if POSTGRES.match(settings.jobs_db):
            return settings.jobs_db
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", settings.jobs_db)
        if scheme:  # the URL itself may hold a password: never repeat it
            raise WhitevecError(f"WHITEVEC_JOBS_DB: {scheme.group(1)} URLs are not supported; give a postgresql:// "
                                "URL or a SQLite file path (on a shared filesystem for several replicas)")
        path = Path(settings.jobs_db)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # -- the data dir -----------------------------------------------------------------------------------
    def lock(self, what: str = SERVER[0], instead: str = SERVER[1]) -> None:
        """Hold the data dir for this process (idempotent); DataDirLocked names the holder and `instead`."""
        self._lock.acquire(what, instead)

    def unlock(self) -> None:
        """Close every collection's bundle and release the data dir (shutdown)."""
        self.stop_sync()
        self.writer.shutdown(wait=True)
        with self._registry:
            for col in self._collections.values():
                col.close()
        self.backend.close()  # an embedded backend's file opens in one process at a time
        self._lock.release()

    @property
    def admin_token(self) -> str:
        return self.token.current()

    def announce_token(self) -> None:
        """Once, to the console (never to the log): a token generated now in full; a kept one by where it is."""
        if self.token.from_settings or self._token_announced:
            return
        self._token_announced = True
        token = self.admin_token
        if self.token.created:
            print(f"whitevec: admin token (generated, kept in {self.token.path}): {token}", file=sys.stderr, flush=True)
        else:
            print(f"whitevec: admin token: in {self.token.path} (`whitevec token --data-dir {self.settings.data_dir}` "
                  "prints it)", file=sys.stderr, flush=True)

    def open(self) -> None:
        """Lock the data dir, upgrade a layout from before collections (its versions become `default`),
        remove crash leftovers and register every collection (nothing loaded yet). Once."""
        if self.opened:
            return
        self.lock()
        data_root = self.settings.data_root
        if layout.upgrade(data_root):
            log.info("upgraded %s: its versions are now the collection `default`", data_root)
        with layout.layout_lock(data_root):
            layout.ensure_default(data_root)
        self._remove_leftovers()
        with self._registry:
            for name in layout.names(data_root):
                self._register(name).cleanup()
        self.opened = True

    def _register(self, name: str) -> Collection:
        col = self._collections.get(name)
        if col is None:
            col = self._collections[name] = Collection(self._shared, name, layout.read_config(self.settings.data_root, name))
        return col

    def _remove_leftovers(self) -> None:
        """Crash leftovers: collections half created or half deleted, trainings, model saves."""
        data_root = self.settings.data_root
        for path in layout.leftovers(data_root):
            if not VersionStore.stale_path(path, shared=self.settings.bundle_dir is not None):
                continue
            if path.name.startswith(".deleting-"):
                self._drop_indexes(path)
            layout.remove(path)
            log.info("removed %s (left by an interrupted collection create or delete)", path.name)
        shutil.rmtree(self.settings.data_dir / "training", ignore_errors=True)
        models = data_root / "models"
        if models.is_dir():
            for path in models.iterdir():
                if path.name.startswith((".tmp-", ".old-")) and VersionStore.stale_path(
                        path, shared=self.settings.bundle_dir is not None):
                    shutil.rmtree(path, ignore_errors=True)

    def _drop_indexes(self, folder: Path) -> None:
        """A deleted collection's indexes kept outside its folder (and the switch replicas follow)."""
        name = folder.name.removeprefix(".deleting-").rsplit("-", 1)[0]
        self.backend.store(folder, name).drop_all_indexes()

    # -- collections ------------------------------------------------------------------------------------
    @property
    def default(self) -> Collection:
        """The collection every route from before collections acts on (for the engine and local commands;
        the HTTP layer reaches it through `gate`, with the caller's pass)."""
        self._check_open()
        col = self.collection(layout.DEFAULT)
        if col is None:
            raise NotReady(self.load_error or "the server is still opening its data dir; retry shortly",
                           headers={"Retry-After": "2"})
        return col

    def _check_open(self) -> None:
        if not self.opened:
            raise NotReady(self.load_error or "the server is still opening its data dir; retry shortly",
                           headers={"Retry-After": "2"})

    def collection(self, name: str) -> Collection | None:
        with self._registry:
            return self._collections.get(name)

    def collections(self) -> list[Collection]:
        with self._registry:
            return [self._collections[n] for n in sorted(self._collections)]

    def load(self) -> None:
        """Open the data dir and load every collection: `default` must load (else the server is not
        ready); another that cannot is reported and answers 503 until fixed."""
        try:
            self.open()
            self.prune_models()
        except Exception as exc:
            self.load_error = str(exc)
            log.error("whitevec could not open its data dir: %s", exc)
            raise
        try:
            for col in self.collections():
                try:
                    col.load()
                except Exception:
                    if col.name == layout.DEFAULT:
                        raise
        finally:
            self.loaded = True  # the sync thread may load what other replicas add from now on

    def create_collection(self, caller: Pass, name: str, model: str | None, whitening: dict | None,
                          index: dict | None, search: dict | None = None, passages: dict | None = None) -> Collection:
        """Write the collection's folder, load its model (shared when another collection uses it), serve it.
        Only the admin's pass creates one."""
        if not caller.admin:
            self.gate.refused("not_admin")
            raise Forbidden("creating a collection needs the admin token")
        naming.check("collection", name)
        model = resolve_model_choice(self.settings.data_root, model)
        config = {"model": model, "whitening": whitening or None, "index": index or None, "search": search or None,
                  "passages": passages}
        with self._registry:
            layout.create(self.settings.data_root, name, config)
            col = self._register(name)
        try:
            col.load()
            dim = (whitening or {}).get("dim")
            if dim is not None and dim > col.require_bundle().encoder.dim:
                raise InvalidRequest(f"whitening dim {dim} is above the model's {col.require_bundle().encoder.dim} "
                                     "dims", param="whitening.dim")
            col.corpus_builds.passage_setting(col.require_bundle().encoder)  # fits the model, or a 422 now
        except Exception:
            self.delete_collection(caller, name, force=True)
            raise
        log.info("created collection %s: %s", name, col.reports.describe())
        return col

    def delete_collection(self, caller: Pass, name: str, force: bool = False) -> int:
        """Remove a collection: out of the registry and the layout (one rename) first, so no new request or
        job reaches it; its jobs here are cancelled, its writes drained; then its keys' scopes, indexes and
        files go. Returns its document count. Only the admin's pass deletes one (KeyError: none of that name)."""
        if not caller.admin:
            self.gate.refused("not_admin")
            raise Forbidden("deleting a collection needs the admin token")
        if name == layout.DEFAULT and not force:
            raise Conflict("the collection `default` cannot be deleted (the routes without a collection use it); "
                           "rebuild it with other documents instead")
        with self._registry:  # held for the dict only: a collection's own locks are never taken under it
            col = self._collections.pop(name, None)
            if col is not None:
                self._deleting.add(name)  # the sync thread must not register it again meanwhile
        if col is None:
            raise KeyError(name)
        try:
            return self._delete(col)
        finally:
            with self._registry:
                self._deleting.discard(name)

    def _delete(self, col: Collection) -> int:
        name = col.name
        col.state.deleted = True
        self.jobs.cancel_collection(name)
        with col.change_lock:  # an upsert or activation in flight ends first; later ones see `deleted`
            count = col.summary()["documents"]
            try:
                retired = layout.retire(self.settings.data_root, name)
            finally:
                col.close()
        self.keys.forget_collection(name)
        self._drop_indexes(retired)
        layout.remove(retired)
        self.prune_models()
        log.info("deleted collection %s (%d documents)", name, count)
        return count

    def _documents_by_collection(self) -> dict[str, int]:
        out = {}
        for col in self.collections():
            b = col.bundle
            out[col.name] = b.layout.count(b.retriever) if b is not None and b.retriever is not None else 0
        return out

    # -- replicas ---------------------------------------------------------------------------------------
    def sync(self) -> None:
        """What other replicas changed: collections created or deleted in the shared bundle dir (told apart
        by their uid, so one deleted and created again is a new one), versions they activated (the
        backend's shared switch), keys they created or revoked."""
        try:
            self.keys.refresh()
        except Exception as exc:  # noqa: BLE001 - the database away: keep the keys known
            log.warning("could not refresh access keys: %s", exc)
        data_root = self.settings.data_root
        with self._registry:  # listed under the lock: a create or delete here is wholly before or after it
            on_disk = {n: layout.read_uid(data_root, n) for n in layout.names(data_root)}
            if layout.DEFAULT not in on_disk:  # a listing caught mid-change, or a folder away: change nothing
                return
            # gone: no folder, or a folder of another uid (deleted and created again); a settings file that
            # cannot be read now (uid None) says nothing either way, so that collection is left as it is
            gone = [self._collections.pop(n) for n, col in list(self._collections.items())
                    if n != layout.DEFAULT
                    and (n not in on_disk or on_disk[n] not in (None, col.config.get("uid", n)))]
            for name, uid in on_disk.items():
                if name not in self._deleting and uid is not None:
                    self._register(name)
        for col in gone:
            log.info("collection %s was deleted by another replica", col.name)
            col.state.deleted = True
            col.close()
        for col in self.collections():
            try:
                if col.load_due():  # a new collection, or a failed load whose retry is due
                    col.load()
                elif col.bundle is None:
                    continue
                else:
                    col.follower.follow_alias()
            except Exception as exc:  # noqa: BLE001 - the backend unreachable, a damaged version: keep serving
                log.warning("collection %s: could not follow the other replicas (serving %s meanwhile): %s",
                            col.name, col.bundle.version if col.bundle else None, exc)

    def start_sync(self) -> None:
        """Every WHITEVEC_ALIAS_POLL_S: `sync()`, in one thread this runtime owns."""
        self._sync_stop.clear()
        self._sync_thread = threading.Thread(target=self._sync_loop, name="whitevec-sync", daemon=True)
        self._sync_thread.start()

    def stop_sync(self) -> None:
        self._sync_stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=30)
            self._sync_thread = None

    def _sync_loop(self) -> None:
        while not self._sync_stop.wait(self.settings.alias_poll_s):
            if not self.loaded:
                continue
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - a bundle dir briefly unreadable: try again next poll
                log.warning("could not sync with other replicas: %s", exc)

    # -- models -----------------------------------------------------------------------------------------
    def prune_models(self) -> list[str]:
        """Delete fine-tuned folders in BUNDLE_DIR/models that no kept version of any collection uses and no
        collection names, past the newest keep_models. Only folders whitevec wrote (they hold a report.json)
        are candidates; a user's own folder is never touched; in a shared bundle dir, neither is one younger
        than a day (another replica's, not yet built)."""
        models = self.settings.data_root / "models"
        if not models.is_dir():
            return []
        used = set()
        for col in self.collections():
            if col.config.get("model") not in (None, "bundled"):
                used.add((models / col.config["model"]).resolve())
            for version in col.versions.versions():
                try:
                    model = col.versions.model_section(version, col.versions.manifest(version))  # upgrades old refs
                    used.add(resolve_model_ref(model, col.versions.models_root).resolve())
                except (OSError, ValueError, KeyError):
                    continue
            if col.bundle is not None:
                used.add(col.bundle.encoder.model_dir.resolve())
        unused = sorted((p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and (p / "report.json").is_file() and p.resolve() not in used),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        shared = self.settings.bundle_dir is not None
        doomed = [p for p in unused[self.settings.keep_models:] if VersionStore.stale_path(p, shared=shared)]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        if doomed:
            log.info("removed unused fine-tuned models: %s", ", ".join(p.name for p in doomed))
        return [p.name for p in doomed]

    def was_activated(self, version: str) -> bool:
        """`version` is in some collection's activation history (a job killed after activating it succeeded);
        also asked before the data dir is opened, when it may still have the layout from before collections."""
        data_root = self.settings.data_root
        folders = [layout.folder(data_root, n) for n in layout.names(data_root)]
        if (data_root / "versions").is_dir():
            folders.append(data_root)
        return any(any(h["version"] == version for h in VersionStore(f).history()) for f in folders)
