"""The service's live state and its lifecycle: data dir, loading, activation and swapping of the served version."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shutil
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from whitevec.index.versions import Bundle, DataDirLock, MilvusTarget, VersionStore
from whitevec.models.encoder import Encoder, EncoderSpec
from whitevec.models.errors import WhitevecError
from whitevec.models.pipeline import Pipeline

from .batcher import Batcher
from .corpus_ops import CorpusOps, Snapshot
from .errors import NotReady
from .jobs import POSTGRES, JobRunner
from .metrics import Metrics
from .replicas import AliasFollower
from .reports import Reports
from .serving import ServedBundle
from .settings import Settings
from .training_runs import TrainingSupervisor

log = logging.getLogger("whitevec")

DEMO_CORPUS = Path(__file__).resolve().parent / "demo" / "corpus.jsonl"


class Runtime:
    """The service's live state and its owner: settings, version store, served bundle, batcher, jobs and
    the parts that act on them (corpus operations, training, replicas, reports). Loads, activates and swaps."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.import_dir.mkdir(parents=True, exist_ok=True)
        settings.bundles.mkdir(parents=True, exist_ok=True)
        self.versions = VersionStore(settings.bundles, milvus=self._milvus_target(settings),
                                     shared=settings.bundle_dir is not None)
        self._lock = DataDirLock(settings.data_dir)
        self.jobs = JobRunner(self._jobs_db(settings), owner=settings.replica_name or self._default_replica(settings))
        self.metrics = Metrics()
        self.batcher = Batcher(settings.max_batch, settings.max_batch_tokens, settings.max_queue_tokens,
                               on_batch=self.metrics.batch_size.observe)
        self.metrics.bind(lambda: self.batcher.pending,
                          lambda: self.bundle.retriever.count() if self.bundle and self.bundle.retriever else 0,
                          self.jobs.counts)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token_generated = token is None
        self.admin_token = token or secrets.token_urlsafe(24)
        self._token_announced = False
        self.served = ServedBundle()
        self.load_error: str | None = None
        self.refused: dict | None = None  # the active version, when it could not be served, and why
        # Upserts, deletes and activations take turns: a change lands in the version that is served
        # when it commits, and a rebuild's activation carries over what was committed while it ran.
        self.change_lock = threading.RLock()
        # Upserts and deletes run here, one at a time, not in the default thread pool that searches use.
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="whitevec-writer")
        self.corpus_ops = CorpusOps(self)
        self.training = TrainingSupervisor(self)
        self.follower = AliasFollower(self)
        self.reports = Reports(self)

    @property
    def bundle(self) -> Bundle | None:
        """The served bundle now (a request or job that keeps using it leases it: `served.lease()`)."""
        return self.served.current

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

    @staticmethod
    def _milvus_target(settings: Settings) -> MilvusTarget | None:
        if settings.index_backend != "milvus":
            return None
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise WhitevecError("WHITEVEC_INDEX_BACKEND=milvus needs pymilvus (and milvus-lite for a file URI): "
                                "pip install 'whitevec[milvus]'") from exc
        uri = settings.milvus_uri or str(settings.bundles.resolve() / "milvus.db")
        return MilvusTarget(MilvusClient(uri), settings.milvus_alias)

    def lock(self, what: str = "a whitevec server") -> None:
        """Hold the data dir for this process (idempotent); DataDirLocked names the holder."""
        self._lock.acquire(what)

    def unlock(self) -> None:
        """Close the served bundle and release the data dir (shutdown)."""
        self.writer.shutdown(wait=True)
        self.served.close()
        if self.versions.milvus is not None:
            self.versions.milvus.client.close()  # Milvus Lite: lets the next process open the file
        self._lock.release()

    def announce_token(self) -> None:
        """A generated admin token is printed once, to the console — never to the log."""
        if self.admin_token_generated and not self._token_announced:
            self._token_announced = True
            print(f"whitevec: no WHITEVEC_ADMIN_TOKEN set; admin token for this run: {self.admin_token}",
                  file=sys.stderr, flush=True)

    def cleanup_at_start(self) -> None:
        """With the data dir locked: crash leftovers of rebuilds, trainings and model saves."""
        removed = self.versions.cleanup_partial()
        if removed:
            log.info("removed leftovers of interrupted rebuilds: %s", ", ".join(removed))
        shutil.rmtree(self.settings.data_dir / "training", ignore_errors=True)
        models = self.settings.bundles / "models"
        if models.is_dir():
            for path in models.iterdir():
                if path.name.startswith((".tmp-", ".old-")) and self.versions.stale(path):
                    shutil.rmtree(path, ignore_errors=True)
        self.prune_models()

    def prune_models(self) -> list[str]:
        """Delete fine-tuned folders in BUNDLE_DIR/models that no kept version uses, past the newest keep_models.
        Only folders whitevec wrote (they hold a report.json) are candidates; a user's own folder is never
        touched; in a shared bundle dir, neither is one younger than a day (another replica's, not yet built)."""
        models = self.settings.bundles / "models"
        if not models.is_dir():
            return []
        used = set()
        for version in self.versions.versions():
            try:
                used.add(Path(self.versions.manifest(version)["model"]["path"]).resolve())
            except (OSError, ValueError, KeyError):
                continue
        if self.bundle is not None:
            used.add(self.bundle.encoder.model_dir.resolve())
        unused = sorted((p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and (p / "report.json").is_file() and p.resolve() not in used),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        doomed = [p for p in unused[self.settings.keep_models:] if self.versions.stale(p)]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        if doomed:
            log.info("removed unused fine-tuned models: %s", ", ".join(p.name for p in doomed))
        return [p.name for p in doomed]

    def encoder_spec(self, model_dir: Path | None = None, engine: str | None = None) -> EncoderSpec:
        """The configured encoder (WHITEVEC_MODEL_DIR, POOLING, TOKENIZER, MAX_LENGTH, ENGINE, DEVICE)."""
        s = self.settings
        return EncoderSpec(model_dir if model_dir is not None else s.model_dir, s.pooling, s.tokenizer, s.max_length,
                           engine or s.engine, s.device, s.max_batch, s.engine_cache)

    def new_encoder(self, model_dir: Path | None = None, engine: str | None = None) -> Encoder:
        return self.encoder_spec(model_dir, engine).build()

    def load(self) -> None:
        """Load the active version (verified); if it is damaged, the newest intact version that was
        served before; if none, the configured model alone. Once."""
        if self.bundle is not None:
            return
        try:
            self.lock()
            self.cleanup_at_start()
            self.served.swap(self._load_best())
        except Exception as exc:
            self.load_error = str(exc)
            log.error("whitevec could not load its model bundle: %s", exc)
            raise
        log.info("whitevec ready: %s", self.reports.describe())

    def _load_best(self) -> Bundle:
        """The active version; when it cannot be served (damaged, or ACTIVE missing, unreadable or naming
        no version), the newest intact one, reported in /readyz as `refused` until an admin activates one."""
        data, problem = self.versions.pointer_state()
        active = data.get("version") if problem is None else None
        candidates = ([active] if active else []) + [v for v in self.versions.newest_versions() if v != active]
        if not candidates:
            return Bundle(Pipeline(self.new_encoder()))
        reason = problem
        for version in candidates:
            try:
                bundle = self.versions.load(version, device=self.settings.device, use_gpu=self.settings.use_gpu_index,
                                            engine=self.settings.engine, engine_cache=self.settings.engine_cache)
            except WhitevecError as exc:
                log.error("refusing version %s: %s", version, exc)
                if version == active:
                    reason = str(exc)
                continue
            if version != active:
                self.refused = {"version": data.get("version"), "reason": reason, "served_instead": version}
                log.error("the active version cannot be served (%s); serving %s, the newest intact version, "
                          "until an activation (POST /admin/versions/{version}/activate) or a rebuild replaces it",
                          reason, version)
            else:
                self._warn_if_model_setting_differs(bundle)
            return bundle
        self.refused = {"version": data.get("version"), "reason": reason, "served_instead": None}
        log.error("no intact version (the active one: %s); serving the configured model without an index "
                  "until a rebuild", reason)
        return Bundle(Pipeline(self.new_encoder()))

    def served_encoder(self) -> Encoder:
        """The model a server on this data dir serves, loaded read-only (no lock, no cleanup)."""
        active = self.versions.active()
        if active is None:
            return self.new_encoder(engine="torch")
        model = self.versions.verify_files(active)["model"]  # training runs torch, in float32
        return EncoderSpec.from_manifest({**model, "engine": "torch"}, device=self.settings.device).build()

    def _warn_if_model_setting_differs(self, bundle: Bundle) -> None:
        wanted = self.settings.model_dir
        served = bundle.encoder.model_dir
        if wanted is not None and Path(wanted).resolve() != served:
            log.warning("WHITEVEC_MODEL_DIR is %s but the active version was built with %s; serving %s. "
                        "Rebuild the index (whitevec index build --model …) to switch models.",
                        wanted, served, served)

    def require_bundle(self) -> Bundle:
        if self.bundle is None:
            raise NotReady(self.load_error or "the model is still loading; retry shortly",
                           headers={"Retry-After": "2"})
        return self.bundle

    def activate(self, version: str, encoder: Encoder | None, just_built: bool = False,
                 since: Snapshot | None = None) -> Bundle:
        """Load a written version fully (verified), then point at it, then serve it: a failure changes nothing.
        A version this process `just_built` is not re-hashed (its checksums were taken from the files), and
        is discarded if it cannot be activated. With `since` (what a job read its corpus from), every change
        acknowledged after that read is applied to the new version before it is served, on either backend;
        if the served version changed meanwhile (a rollback), the activation fails and says so."""
        try:
            bundle = self.versions.load(version, encoder=encoder, device=self.settings.device,
                                        use_gpu=self.settings.use_gpu_index,
                                        engine=encoder.engine if encoder else None,
                                        engine_cache=self.settings.engine_cache, checksums=not just_built)
        except BaseException:
            if just_built:
                self.versions.discard(version)
            raise
        with self.served.lease(), self.change_lock:  # the lease keeps the old version open for the last pass
            try:
                seq = self.corpus_ops.carry_over(since, bundle, since.seq) if since is not None else 0
                self.versions.activate(version)
            except BaseException:
                bundle.close()
                if just_built:
                    self.versions.discard(version)
                raise
            # the pointer (and alias) name the new version now: serve it, whatever happens next
            previous = self.served.swap(bundle)
            self.refused = None
            if since is not None:  # what other replicas acknowledged before the alias moved
                try:
                    self.corpus_ops.carry_over(since, bundle, seq, served=previous)
                except Exception as exc:  # noqa: BLE001 - replicas re-apply a write that raced the move
                    log.error("version %s is served, but the changes other replicas acknowledged while it was "
                              "activated could not be read from version %s: %s", version, since.bundle.version, exc)
        protect = {previous.version} if previous is not None and previous.version else set()
        pruned = self.versions.prune(self.settings.keep_versions, protect=protect)
        if pruned:
            log.info("pruned old versions %s", ", ".join(pruned))
        self.prune_models()
        log.info("serving version %s: %s", version, self.reports.describe())
        return bundle

    def activate_existing(self, version: str) -> Bundle:
        """Serve a kept version again (roll back or forward): loaded and verified in full first, so a
        damaged or incomplete one changes nothing."""
        if version not in self.versions.versions():
            raise KeyError(version)
        return self.activate(version, self.bundle.encoder if self.bundle is not None else None)

    def was_activated(self, version: str) -> bool:
        """`version` is in the activation history (a job killed after activating it succeeded)."""
        return any(h["version"] == version for h in self.versions.history())
