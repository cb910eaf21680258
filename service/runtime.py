"""The service's live state: the served bundle, the batcher, the job runner, and the jobs' work."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whitevec.index.build import BuildResult, build_version
from whitevec.index.changes import CHANGES_FILE
from whitevec.index.documents import check_count
from whitevec.index.faiss_index import IndexSpec
from whitevec.index.milvus import alias_target
from whitevec.index.store import Corpus, Document, Documents
from whitevec.index.versions import Bundle, DataDirLock, MilvusTarget, ServedVersionChanged, VersionStore
from whitevec.models.encoder import Encoder
from whitevec.models.errors import WhitevecError
from whitevec.models.loader import bundled_model_dir
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import WhiteningParams

from .batcher import Batcher
from .errors import Conflict, InvalidRequest, NotReady
from .jobs import POSTGRES, JobContext, JobRunner
from .metrics import Metrics
from .serving import ServedBundle
from .settings import Settings

log = logging.getLogger("whitevec")

DEMO_CORPUS = Path(__file__).resolve().parent / "demo" / "corpus.jsonl"
#: Suffixes earlier fine-tunes added to a model name; stripped so names never grow.
_FINETUNE_SUFFIX = re.compile(r"(-ft-\d{8}T\d{6}-[0-9a-f]{4}|-amsoftmax(-\d{8}T\d{6})?)$")
MODEL_BASE_CHARS = 40


class Runtime:
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
        self._change_lock = threading.RLock()
        # Upserts and deletes run here, one at a time, not in the default thread pool that searches use.
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="whitevec-writer")
        self._names_lock = threading.Lock()
        self._reserved_names: set[str] = set()  # fine-tune names of queued and running training jobs
        self.training_command = [sys.executable, "-m", "whitevec.models.training"]  # + the job's config file
        self._follow_stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._alias_unknown: str | None = None  # logged once

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

    # --- the data dir ----------------------------------------------------------------------

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

    # --- loading and swapping --------------------------------------------------------------

    def new_encoder(self, model_dir: Path | None = None, engine: str | None = None) -> Encoder:
        s = self.settings
        return Encoder(model_dir if model_dir is not None else s.model_dir, pooling=s.pooling,
                       tokenizer=s.tokenizer, max_length=s.max_length, device=s.device, batch_size=s.max_batch,
                       engine=engine or s.engine, engine_cache=s.engine_cache)

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
        log.info("whitevec ready: %s", self.describe())

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
        model = self.versions.verify_files(active)["model"]
        return Encoder(model["path"], pooling=model["pooling"], tokenizer=model["tokenizer"],
                       max_length=model["max_length"], device=self.settings.device,
                       half_on_cuda=False)  # training runs torch, in float32

    def _warn_if_model_setting_differs(self, bundle: Bundle) -> None:
        wanted = self.settings.model_dir
        served = bundle.encoder.model_dir
        if wanted is not None and Path(wanted).resolve() != served:
            log.warning("WHITEVEC_MODEL_DIR is %s but the active version was built with %s; serving %s. "
                        "Rebuild the index (whitevec index build --model …) to switch models.",
                        wanted, served, served)

    def describe(self) -> str:
        b = self.bundle
        if b is None:
            return "loading"
        index = (f"{b.retriever.spec.type} index of {b.retriever.count()} documents on {self.index_device(b)}"
                 if b.retriever else "no index")
        return f"model {b.encoder.identity.name} ({b.encoder.pooling.mode}) on {b.encoder.device}, {index}"

    @staticmethod
    def index_device(bundle: Bundle) -> str | None:
        return bundle.retriever.device if bundle.retriever is not None else None

    def require_bundle(self) -> Bundle:
        if self.bundle is None:
            raise NotReady(self.load_error or "the model is still loading; retry shortly",
                           headers={"Retry-After": "2"})
        return self.bundle

    def no_index_message(self) -> str:
        if self.refused is not None:
            return (f"the active version {self.refused['version']} cannot be served ({self.refused['reason']}) "
                    "and no other intact version exists: rebuild the index (POST /admin/index/rebuild)")
        return ("no index has been built yet: POST /admin/index/rebuild with documents, "
                "or run `whitevec index build FILE.jsonl`")

    def model_source(self, encoder: Encoder) -> str:
        """Where the served model comes from, without absolute paths."""
        path = encoder.model_dir
        if path == bundled_model_dir().resolve():
            return "bundled"
        try:
            where = "bundle dir: " if self.settings.bundle_dir is not None else "data dir: "
            return where + str(path.relative_to(self.settings.bundles.resolve()))
        except ValueError:
            return "model folder " + path.name

    def ready_report(self) -> dict:
        bundle = self.require_bundle()
        enc, r, w = bundle.encoder, bundle.retriever, bundle.pipeline.whitening
        s = self.settings
        return {
            "status": "ready" if self.refused is None else "degraded",
            "model": enc.identity.name,
            "model_source": self.model_source(enc),
            "pooling": enc.pooling.mode,
            "tokenizer": enc.tokenizer.kind,
            "encoder_device": str(enc.device),
            "engine": enc.engine,
            "dim": bundle.pipeline.output_dim(),
            "model_dim": enc.dim,
            "version": bundle.version,
            "refused": self.refused,
            "whitening": None if w is None else {"version": w.version, **w.params.to_dict()},
            "limits": {"max_texts": s.max_texts, "max_text_chars": s.max_text_chars, "max_k": s.max_k,
                       "max_body_bytes": s.max_body_bytes, "max_nprobe": s.max_nprobe,
                       "max_ef_search": s.max_ef_search},
            "index": {
                "loaded": r is not None,
                "type": r.spec.type if r else None,
                "spec": r.spec.to_dict() if r else None,
                "device": self.index_device(bundle),
                "count": bundle.retriever.count() if bundle.retriever else 0,
                "pending_changes": bundle.retriever.pending_changes() if bundle.retriever else 0,
            },
        }

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
        try:
            with self._change_lock:
                seq = self._carry_over(since, bundle, since.seq) if since is not None else 0
                self.versions.activate(version)
                if since is not None:  # what other replicas acknowledged before the alias moved
                    self._carry_over(since, bundle, seq)
                previous = self.served.swap(bundle)
                self.refused = None
        except BaseException:
            bundle.close()
            if just_built:
                self.versions.discard(version)
            raise
        protect = {previous.version} if previous is not None and previous.version else set()
        pruned = self.versions.prune(self.settings.keep_versions, protect=protect)
        if pruned:
            log.info("pruned old versions %s", ", ".join(pruned))
        self.prune_models()
        log.info("serving version %s: %s", version, self.describe())
        return bundle

    def versions_report(self) -> list[dict]:
        """Every kept version, newest first: times, counts, model, whitening, index, which is active."""
        active = self.versions.active()
        activated: dict[str, list[float]] = {}
        for h in self.versions.history():
            activated.setdefault(h["version"], []).append(h.get("activated_at"))
        served = self.bundle.version if self.bundle is not None else None
        out = []
        for version in reversed(self.versions.versions()):
            try:
                m = self.versions.manifest(version)
            except (OSError, ValueError) as exc:
                out.append({"version": version, "active": version == active, "damaged": f"manifest unreadable: {exc}"})
                continue
            w = m.get("whitening", {})
            out.append({
                "version": version, "active": version == active, "served": version == served,
                "created_at": m.get("created_at"), "activated_at": (activated.get(version) or [None])[0],
                "documents": m.get("documents", {}).get("count"),
                "changes": self._changes_report(version, m),
                "model": {k: m.get("model", {}).get(k) for k in ("name", "fingerprint", "pooling", "engine", "dim")},
                "whitening": {**w.get("params", {}), "output_dim": w.get("output_dim"), "fitted_on": w.get("n_vectors")},
                "index": m.get("index", {}).get("spec"),
            })
        return out

    def _changes_report(self, version: str, manifest: dict) -> dict:
        """Upserts and deletes logged to a version since its build, and its live document count."""
        bundle = self.bundle
        if manifest.get("backend") == "milvus":  # changed in place in its collection; Milvus compacts it
            name, milvus = self.versions.collection(version), self.versions.milvus
            if milvus is None or not milvus.client.has_collection(name):
                return {"damaged": f"Milvus collection {name} is not reachable with WHITEVEC_MILVUS_URI"}
            found = milvus.client.query(name, filter="", output_fields=["count(*)"])
            return {"live_documents": int(found[0]["count(*)"])}
        if bundle is not None and bundle.version == version and bundle.retriever is not None:
            return {**bundle.retriever.change_counts(), "live_documents": bundle.retriever.count()}
        built = manifest.get("documents", {}).get("count") or 0
        path = self.versions.folder(version) / CHANGES_FILE
        if not path.is_file():
            return {"added": 0, "gone": 0, "live_documents": built}
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                added = conn.execute("SELECT COUNT(*) FROM added WHERE live = 1").fetchone()[0]
                gone = conn.execute("SELECT COUNT(*) FROM gone").fetchone()[0]
        except sqlite3.Error as exc:
            return {"damaged": f"{CHANGES_FILE} is unreadable: {exc}"}
        return {"added": added, "gone": gone, "live_documents": built - gone + added}

    def activate_existing(self, version: str) -> Bundle:
        """Serve a kept version again (roll back or forward): loaded and verified in full first, so a
        damaged or incomplete one changes nothing."""
        if version not in self.versions.versions():
            raise KeyError(version)
        return self.activate(version, self.bundle.encoder if self.bundle is not None else None)

    # --- replicas (milvus backend) ---------------------------------------------------------

    def follow_alias(self) -> str | None:
        """When the Milvus alias names another version's collection (another replica activated it), load
        that version's model and whitening, then serve them: never this model against another's index.
        Returns the version switched to, if any."""
        milvus, bundle = self.versions.milvus, self.bundle
        if milvus is None or bundle is None:
            return None
        target = alias_target(milvus.client, milvus.alias)
        if target is None or (bundle.version is not None and self.versions.collection(bundle.version) == target):
            return None
        version = self.versions.version_of(target)
        if version is None:
            if self._alias_unknown != target:
                self._alias_unknown = target
                log.error("the Milvus alias %s names collection %s, which no version in %s describes: give every "
                          "replica the same WHITEVEC_BUNDLE_DIR", milvus.alias, target, self.versions.root)
            return None
        new = self.versions.load(version, encoder=bundle.encoder, device=self.settings.device,
                                 use_gpu=self.settings.use_gpu_index, engine=bundle.encoder.engine,
                                 engine_cache=self.settings.engine_cache)
        with self._change_lock:
            if self.bundle is not bundle:  # this replica activated a version while that one loaded
                new.close()
                return None
            self.served.swap(new)
            self.refused = None
        log.info("another replica activated version %s; serving it: %s", version, self.describe())
        return version

    def start_following(self) -> None:
        """With the Milvus backend: poll the alias every WHITEVEC_ALIAS_POLL_S seconds."""
        if self.versions.milvus is None:
            return
        self._follow_stop.clear()
        self._follower = threading.Thread(target=self._follow, name="whitevec-alias", daemon=True)
        self._follower.start()

    def stop_following(self) -> None:
        self._follow_stop.set()
        if self._follower is not None:
            self._follower.join(timeout=30)
            self._follower = None

    def _follow(self) -> None:
        while not self._follow_stop.wait(self.settings.alias_poll_s):
            try:
                self.follow_alias()
            except Exception as exc:  # noqa: BLE001 - Milvus unreachable, a damaged version: keep serving
                log.warning("could not follow the Milvus alias (serving %s meanwhile): %s",
                            self.bundle.version if self.bundle else None, exc)

    # --- rebuilds --------------------------------------------------------------------------

    def whitening_params(self, beta: float | None, gamma: float | None, dim: int | None) -> WhiteningParams:
        s = self.settings
        return WhiteningParams(s.whiten_beta if beta is None else beta, s.whiten_gamma if gamma is None else gamma,
                               s.whiten_dim if dim is None else dim)

    @staticmethod
    def check_whitening_dim(params: WhiteningParams, encoder: Encoder) -> None:
        if params.dim is not None and params.dim > encoder.dim:
            raise InvalidRequest(f"whitening dim {params.dim} is above the model's {encoder.dim} dims",
                                 param="whitening.dim")

    def index_spec(self, fields: dict | None, n: int | None = None) -> IndexSpec:
        """The asked index spec over the defaults; checked against n documents when given."""
        fields = {k: v for k, v in (fields or {}).items() if v is not None}
        fields.setdefault("type", self.settings.index_type)
        try:
            spec = IndexSpec(**fields)
            if n is not None and n >= self.settings.min_approx_vectors:
                spec.resolved(n)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="index") from exc
        return spec

    @staticmethod
    def check_raw_vectors(bundle: Bundle) -> None:
        """reencode: false and upserts need the version's stored raw vectors (kept by every version built
        since whitevec stores them)."""
        if bundle.retriever is None or not bundle.retriever.has_raw:
            raise Conflict(f"version {bundle.version} has no stored raw vectors (it was built before whitevec kept "
                           "them): rebuild it once with reencode: true, after which reencode: false works")

    def corpus(self, bundle: Bundle, with_raw: bool) -> tuple[Documents, np.ndarray | None, Snapshot]:
        """The served corpus (built rows + changes) for a rebuild, its raw vectors when asked, and the
        snapshot they were read at (for carrying over changes acknowledged while the job runs)."""
        if bundle.retriever is None:
            raise RuntimeError("there is no index to rebuild from; build one first")
        with self._change_lock:  # documents and snapshot from the same moment
            since = Snapshot(bundle, bundle.retriever.sequence())
            if with_raw:
                self.check_raw_vectors(bundle)
            docs, raw = bundle.retriever.documents(bundle.retriever.stored_raw() if with_raw else None)
        return docs, raw, since

    def rewhiten(self, ctx: JobContext | None, whitening: WhiteningParams, spec: IndexSpec) -> dict:
        """A new version of the served corpus from its stored raw vectors: whitening refitted with
        `whitening`, index rebuilt as `spec`, the model never run. The served version is read when the job runs."""
        bundle = self.require_bundle()
        documents, raw, since = self.corpus(bundle, with_raw=True)
        if ctx is not None:
            ctx.progress(len(documents), len(documents), phase="indexing")
        try:
            result = build_version(self.versions, bundle.encoder, documents, whitening, spec,
                                   min_approx=self.settings.min_approx_vectors, raw_vectors=raw)
        finally:
            _release(documents)
        if ctx is not None:
            ctx.check_cancelled()
            ctx.checkpoint(built_version=result.version)
        self.activate(result.version, bundle.encoder, just_built=True, since=since)
        return {**_job_result(result), "reencoded": False}

    def change_documents(self, upserts: list[Document], deletes: list[str]) -> dict:
        """Upsert and/or delete documents of the served version, durable before returning: new texts are
        encoded with the served model (outside the change lock: searches and other writers never wait on
        the model) and transformed with the served whitening (no refit), then logged to the version's
        change log with a journal sequence number and swapped into the view searches read. O(change);
        once pending changes pass WHITEVEC_COMPACT_CHANGES (and a quarter of the corpus) they are folded
        into a new version. With replicas on Milvus, the write goes to the version the alias names: a
        replica that has not followed a switch yet follows it first, and re-applies a change that raced one."""
        with self.served.lease() as bundle:
            self._check_change(bundle, upserts, deletes)
            encoded = self._encode_upserts(bundle, upserts)
        with self._change_lock:
            bundle = self._follow_before_write()
            done = self._apply_change(bundle, upserts, deletes, encoded)
            if self._alias_moved(bundle):
                bundle = self._follow_before_write()
                done = self._apply_change(bundle, upserts, deletes, encoded)
            version, retriever = bundle.version, bundle.retriever
            pending = retriever.pending_changes()  # 0 for Milvus, which compacts its own segments
            if (pending > self.settings.compact_changes and pending > retriever.count() // 4
                    and not self.jobs.counts().get("running")):  # a running rebuild carries them over instead
                version = self.compact(bundle)
            return {"version": version, "missing": done.missing, "deleted": done.deleted, "upserted": done.upserted}

    def _check_change(self, bundle: Bundle | None, upserts: list[Document], deletes: list[str]) -> None:
        if bundle is None:
            raise NotReady(self.load_error or "the model is still loading; retry shortly", headers={"Retry-After": "2"})
        if bundle.retriever is None or bundle.pipeline.whitening is None:
            raise Conflict(self.no_index_message())
        self.check_raw_vectors(bundle)
        after = bundle.retriever.count_after([d.id for d in upserts], deletes)
        if after < 2:
            raise Conflict(f"the change would leave {after} document(s); an index needs at least 2 "
                           "(rebuild with new documents instead)")
        if after > self.settings.max_documents:
            raise InvalidRequest(f"the corpus would have {after} documents, above WHITEVEC_MAX_DOCUMENTS "
                                 f"({self.settings.max_documents})", param="documents")

    @staticmethod
    def _encode_upserts(bundle: Bundle, upserts: list[Document]) -> tuple[Encoder, np.ndarray]:
        enc = bundle.encoder
        raw = enc.encode([d.text for d in upserts]).vectors if upserts else np.zeros((0, enc.dim), np.float32)
        return enc, raw

    def _apply_change(self, bundle: Bundle, upserts: list[Document], deletes: list[str],
                      encoded: tuple[Encoder, np.ndarray]):
        """Commit a change to `bundle` (change lock held); re-encodes if a switch brought another model."""
        self._check_change(bundle, upserts, deletes)
        encoder, raw = encoded
        if not _same_vectors(encoder, bundle.encoder):
            raw = self._encode_upserts(bundle, upserts)[1]
        return bundle.retriever.change(upserts, raw, deletes)

    def _alias_moved(self, bundle: Bundle) -> bool:
        """With Milvus: the alias no longer names `bundle`'s collection (another replica activated one)."""
        milvus = self.versions.milvus
        if milvus is None or bundle.version is None:
            return False
        return alias_target(milvus.client, milvus.alias) != self.versions.collection(bundle.version)

    def _follow_before_write(self) -> Bundle:
        """The bundle a write goes to: the one the alias names (followed now if another replica moved it)."""
        bundle = self.require_bundle()
        if self._alias_moved(bundle):
            self.follow_alias()
        return self.require_bundle()

    def compact(self, bundle: Bundle) -> str:
        """Fold a version's logged changes into a new version (same model, same fit, index type kept)."""
        with self._change_lock:
            documents, raw, _ = self.corpus(bundle, with_raw=True)
            fit = bundle.pipeline.whitening
            log.info("compacting %d pending changes of version %s", bundle.retriever.pending_changes(), bundle.version)
            try:
                asked = (bundle.manifest or {}).get("whitening", {}).get("requested")
                result = build_version(self.versions, bundle.encoder, documents,
                                       WhiteningParams(**asked) if asked else fit.params, bundle.retriever.spec,
                                       min_approx=self.settings.min_approx_vectors, raw_vectors=raw, fit=fit)
            finally:
                _release(documents)
            self.activate(result.version, bundle.encoder, just_built=True)
            return result.version

    def _carry_over(self, since: Snapshot, new: Bundle, after: int) -> int:
        """Apply to `new` every change acknowledged to the served version after journal sequence `after`
        (change lock held); returns the head it read up to. The served version must be the one the job
        read: after a rollback its changes went elsewhere, and the job must not silently undo that."""
        old = since.bundle
        if self.bundle is not old:
            served = self.bundle.version if self.bundle is not None else None
            raise ServedVersionChanged(f"the served version changed while this job ran (it read version {old.version}; "
                                       f"version {served} is served now): run the job again")
        head = old.retriever.sequence()
        ids = old.retriever.changed_since(after)
        if not ids:
            return head
        docs, raw = old.retriever.fetch(ids)
        present = {d.id for d in docs}
        deletes = [i for i in ids if i not in present]
        if raw is None or not _same_vectors(old.encoder, new.encoder):
            raw = self._encode_upserts(new, docs)[1]
        new.retriever.change(docs, raw, deletes)
        log.info("carried %d upserts and %d deletes acknowledged during the job over to version %s",
                 len(docs), len(deletes), new.version)
        return head

    def merged(self, documents: list[Document]) -> tuple[Documents, Snapshot | None]:
        """The served corpus with `documents` (unique ids) added; one with an existing id replaces that
        document in place. Read when the job runs, so it merges into whatever is served then."""
        bundle = self.require_bundle()
        if bundle.retriever is None:
            return documents, None
        current, _, since = self.corpus(bundle, with_raw=False)
        if isinstance(current, Corpus):
            out: Documents = current.merged(documents)
            current.close()
        else:  # a backend that hands over a list
            new = {d.id: d for d in documents}
            out = [new.pop(d.id, d) for d in current] + list(new.values())
        try:
            check_count(len(out), self.settings.max_documents)
        except WhitevecError:
            _release(out)
            raise
        return out, since

    def rebuild(self, ctx: JobContext | None, documents: Documents, whitening: WhiteningParams,
                spec: IndexSpec, encoder: Encoder | None = None, progress_bar: bool = False,
                since: Snapshot | None = None, raw_vectors: np.ndarray | None = None) -> dict:
        """Encode with `encoder`, or the model served when this runs, fit, index, write a version, swap it in.
        `since`: the served corpus was read at that snapshot (merge, new model): later changes carry over.
        `raw_vectors`: the documents' pooled vectors by this encoder, already encoded (on a Ray cluster)."""
        encoder = encoder or self.require_bundle().encoder
        self.check_whitening_dim(whitening, encoder)

        def on_progress(done: int, total: int) -> None:
            if ctx is not None:
                ctx.check_cancelled()
                ctx.progress(done, total, phase="encoding")

        try:
            result = build_version(self.versions, encoder, documents, whitening, spec, on_progress, progress_bar,
                                   min_approx=self.settings.min_approx_vectors, raw_vectors=raw_vectors)
        finally:
            _release(documents)
        if ctx is not None:
            ctx.check_cancelled()
            ctx.checkpoint(built_version=result.version)
        self.activate(result.version, encoder, just_built=True, since=since)
        return {**_job_result(result), "reencoded": True}

    # --- training --------------------------------------------------------------------------

    def model_output_dir(self, name: str | None, base: str | None = None) -> Path:
        """Where a fine-tune is written: `name`, or a bounded unique name from the served model's base name.
        The name stays reserved until `release_model_name` (a training job's end): two jobs never share one."""
        models = self.settings.bundles / "models"
        if name is not None:
            out = models / name
            with self._names_lock:
                if out.exists() or name in self._reserved_names:
                    raise InvalidRequest(f"a model named {name!r} already exists in the data dir or is being "
                                         "trained; choose another `name`, or omit it for a generated one",
                                         param="name")
                self._reserved_names.add(name)
            return out
        base = base or self.require_bundle().encoder.identity.name
        while (stripped := _FINETUNE_SUFFIX.sub("", base)) != base:
            base = stripped
        base = base[:MODEL_BASE_CHARS] or "model"
        while True:
            out = models / f"{base}-ft-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
            with self._names_lock:
                if not out.exists() and out.name not in self._reserved_names:
                    self._reserved_names.add(out.name)
                    return out

    def release_model_name(self, out: Path) -> None:
        with self._names_lock:
            self._reserved_names.discard(out.name)

    def was_activated(self, version: str) -> bool:
        """`version` is in the activation history (a job killed after activating it succeeded)."""
        return any(h["version"] == version for h in self.versions.history())

    def training_spec(self, config: dict, examples: list[dict] | None, pairs: list[dict] | None,
                      pair_threshold: float, eval_path: Path | None, out_dir: Path) -> dict:
        """What the worker needs: the model served when the job runs, the data, where to write."""
        enc = self.require_bundle().encoder
        return {
            "model": {"path": str(enc.model_dir), "pooling": enc.pooling.mode, "tokenizer": enc.tokenizer.kind,
                      "max_length": enc.max_length},
            "device": self.settings.device, "config": config, "examples": examples, "pairs": pairs,
            "pair_threshold": pair_threshold, "eval_path": str(eval_path) if eval_path else None,
            "out_dir": str(out_dir),
        }

    def train(self, ctx: JobContext, spec: dict, activate: bool) -> dict:
        """Run whitevec.models.training in a child process with bounded threads; optionally activate the result.
        The work folder is removed when the job ends, whatever the outcome."""
        work = self.settings.data_dir / "training" / ctx.id
        work.mkdir(parents=True, exist_ok=True)
        try:
            report = self._run_training(ctx, spec, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result = {"model_dir": Path(spec["out_dir"]).name, "report": report}
        if activate:
            result["activation"] = self.activate_model(ctx, Path(spec["out_dir"]))
        else:
            self.prune_models()
        return result

    def _run_training(self, ctx: JobContext, spec: dict, work: Path) -> dict:
        spec = {**spec, "config": {**spec["config"], "threads": self.settings.train_threads}}
        (work / "config.json").write_text(json.dumps(spec), encoding="utf-8")
        threads = str(self.settings.train_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        with open(work / "stderr.log", "w") as err:
            proc = subprocess.Popen([*self.training_command, str(work / "config.json")],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                    preexec_fn=die_with_parent)
            watcher = threading.Thread(target=self._stop_on_cancel, args=(ctx, proc), daemon=True)
            watcher.start()
            report, error = None, None
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    try:
                        event = json.loads(line)
                        kind = event["event"]
                    except (ValueError, KeyError, TypeError):
                        raise RuntimeError(f"the training process printed a line that is not one of its JSON "
                                           f"events ({line.strip()[:200]!r}); it was stopped") from None
                    if kind == "start":
                        ctx.progress(0, 1, phase="training", classes=event["n_classes"], texts=event["n_texts"])
                    elif kind == "step":
                        ctx.progress(event["step"], event["total"], phase="training", loss=round(event["loss"], 5))
                    elif kind == "eval":
                        ctx.note(**{f"eval_{event['when']}": event["spearman"],
                                    f"hit_at_1_{event['when']}": event.get("hit_at_1")})
                    elif kind == "error":
                        error = event["error"]
                    elif kind == "done":
                        report = event["report"]
            finally:
                if proc.poll() is None and report is None:
                    proc.kill()
                rc = proc.wait()
        ctx.check_cancelled()
        if report is None:
            tail = (work / "stderr.log").read_text(errors="replace")[-500:].strip()
            raise RuntimeError(error or (f"the training process was killed by signal {-rc} (out of memory?)" if rc < 0
                                         else f"the training process exited with status {rc}: {tail}"))
        return report

    @staticmethod
    def _stop_on_cancel(ctx: JobContext, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            if ctx.cancel_event.wait(0.2):
                proc.terminate()
                return

    def activate_model(self, ctx: JobContext | None, model_dir: Path) -> dict:
        """Re-encode the served corpus with a new model, refit whitening with the current (β, γ, dim),
        rebuild the index, and swap all of it in as one new version."""
        bundle = self.require_bundle()
        if bundle.retriever is None or bundle.pipeline.whitening is None:
            raise RuntimeError("there is no index to re-encode; build one first, then activate the model")
        enc = bundle.encoder
        encoder = Encoder(model_dir, pooling=enc.pooling.mode, tokenizer=enc.tokenizer.kind, max_length=enc.max_length,
                          device=self.settings.device, batch_size=self.settings.max_batch,
                          engine=self.settings.engine, engine_cache=self.settings.engine_cache)
        documents, _, since = self.corpus(bundle, with_raw=False)
        return self.rebuild(ctx, documents, bundle.pipeline.whitening.params, bundle.retriever.spec, encoder=encoder,
                            since=since)


def die_with_parent() -> None:
    """In a child, before exec: the kernel kills it when the server dies (kill -9 included), so a
    training process never outlives the job that supervises it (Linux PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Snapshot:
    """The served version and its journal head at the moment a job read the corpus."""

    bundle: Bundle
    seq: int


def _same_vectors(a: Encoder, b: Encoder) -> bool:
    """Two encoders give the same raw vectors (same weights, same engine)."""
    return a.identity.fingerprint == b.identity.fingerprint and a.engine == b.engine


def _release(documents: Documents) -> None:
    """Close a lazy corpus's own connection once its build is done."""
    if isinstance(documents, Corpus):
        documents.close()


def _job_result(result: BuildResult) -> dict:
    """What a rebuild job reports: the new version, counts, index, model and whitening."""
    m = result.manifest
    return {"version": result.version, "documents": m["documents"]["count"], "index": m["index"],
            "model": m["model"]["name"],
            "whitening": {k: m["whitening"][k] for k in ("version", "params", "rank", "output_dim", "jl_dim")},
            "seconds": m["build_seconds"], "warnings": m["warnings"]}
