"""One collection's live state: its versions, the bundle it serves, its change lock; loads, activates, swaps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whitevec.index import layout, naming
from whitevec.index.backends import IndexBackend
from whitevec.index.bundle import Bundle
from whitevec.models.encoder import Encoder, EncoderPool, EncoderSpec
from whitevec.models.errors import WhitevecError
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import WhiteningParams

from .clock import iso
from .corpus_builds import CorpusBuilds
from .corpus_changes import CorpusChanges, Snapshot
from .errors import NotFound
from .replicas import AliasFollower
from .reports import Reports
from .settings import Settings
from .state import CollectionDefaults, CollectionState

log = logging.getLogger("whitevec")

#: A failed collection load is retried after this, doubling each time up to the max.
LOAD_RETRY_FIRST_S = 2.0
LOAD_RETRY_MAX_S = 60.0


@dataclass(frozen=True)
class Shared:
    """What the runtime shares with each of its collections, handed over at construction: the settings,
    the index backend, the encoder pool (collections on one model share its weights), whether a job is
    running, and the pruning of unused fine-tunes after an activation."""

    settings: Settings
    backend: IndexBackend
    encoders: EncoderPool
    jobs_busy: Callable[[], bool]
    prune_models: Callable[[], object]


class Collection:
    """A named corpus with its own whitening fit, index, documents, change log and versions. Its parts
    (corpus operations, alias follower, reports) get the collection's state and what else they use at
    construction, never the collection; they reach the backend only through the VersionStore and the
    Retriever protocol."""

    def __init__(self, shared: Shared, name: str, config: dict) -> None:
        self.shared = shared
        self.settings = shared.settings
        self.config = config
        self.defaults = CollectionDefaults(config, shared.settings)
        folder = layout.folder(shared.settings.data_root, name)
        self.state = CollectionState(name, shared.backend.store(folder, name, shared.encoders))
        self.load_failures = 0  # in a row: the sync thread retries a failed load with backoff
        self.next_load_at: float | None = None  # monotonic time of the next retry
        self._loading = threading.Lock()
        self.reports = Reports(self.state, shared.settings)
        self.follower = AliasFollower(self.state, self.load_version, self.reports.describe)
        self.corpus_changes = CorpusChanges(self.state, self.defaults, shared.settings, self.follower, self.reports,
                                            self.activate, shared.jobs_busy)
        self.corpus_builds = CorpusBuilds(self.state, self.defaults, shared.settings, shared.encoders,
                                          self.corpus_changes, self.activate)

    # the state every part shares, read here for the routes and the runtime
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def versions(self):
        return self.state.versions

    @property
    def served(self):
        return self.state.served

    @property
    def change_lock(self):
        return self.state.change_lock

    @property
    def deleted(self) -> bool:
        return self.state.deleted

    @property
    def refused(self) -> dict | None:
        return self.state.refused

    @property
    def load_error(self) -> str | None:
        return self.state.load_error

    @property
    def bundle(self) -> Bundle | None:
        """The served bundle now (a request or job that keeps using it leases it: `served.lease()`)."""
        return self.state.bundle

    def require_bundle(self) -> Bundle:
        return self.state.require_bundle()

    @property
    def created_at(self) -> float | None:
        return self.config.get("created_at")

    def model_dir(self) -> Path | None:
        """The collection's configured model folder: none (the server's), `bundled`, or a folder in models/."""
        return layout.model_folder(self.settings.data_root, self.config.get("model")) or self.settings.model_dir

    def encoder_spec(self, model_dir: Path | None = None, engine: str | None = None) -> EncoderSpec:
        """This collection's model (or `model_dir`) with the server's pooling, tokenizer, engine and device."""
        return self.settings.encoder_spec(model_dir if model_dir is not None else self.model_dir(), engine)

    def new_encoder(self, model_dir: Path | None = None, engine: str | None = None) -> Encoder:
        """From the shared pool: collections on one model share its weights."""
        return self.shared.encoders.get(self.encoder_spec(model_dir, engine))

    def cleanup(self) -> None:
        """At start (data dir locked): what a crashed rebuild of this collection left behind."""
        removed = self.versions.cleanup_partial()
        if removed:
            log.info("collection %s: removed leftovers of interrupted rebuilds: %s", self.name, ", ".join(removed))

    def load(self) -> None:
        """Serve the active version (verified); if it is damaged, the newest intact one; if none, the
        collection's model alone. Once."""
        with self._loading:
            if self.bundle is not None or self.deleted:
                return
            self._load()

    def _load(self) -> None:
        try:
            self.served.swap(self._load_best())
            self.state.load_error, self.load_failures, self.next_load_at = None, 0, None
        except Exception as exc:
            self.load_failures += 1
            wait = min(LOAD_RETRY_MAX_S, LOAD_RETRY_FIRST_S * 2 ** (self.load_failures - 1))
            self.next_load_at = time.monotonic() + wait
            self.state.load_error = f"collection {self.name}: {exc} (retried in {wait:.0f} s)"
            log.error("collection %s could not be loaded (try %d; next in %.0f s): %s", self.name,
                      self.load_failures, wait, exc)
            raise
        log.info("collection %s ready: %s", self.name, self.reports.describe())

    def load_due(self) -> bool:
        """Not served yet, and a first load or a retry after a failure is due (the index backend unreachable at start, say)."""
        if self.bundle is not None or self.deleted:
            return False
        return self.next_load_at is None or time.monotonic() >= self.next_load_at

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
                bundle = self.load_version(version)
            except WhitevecError as exc:
                log.error("collection %s: refusing version %s: %s", self.name, version, exc)
                if version == active:
                    reason = str(exc)
                continue
            if version != active:
                self.state.refused = {"version": data.get("version"), "reason": reason, "served_instead": version}
                log.error("collection %s: the active version cannot be served (%s); serving %s, the newest intact "
                          "version, until an activation or a rebuild replaces it", self.name, reason, version)
            else:
                self._warn_if_model_setting_differs(bundle)
            return bundle
        self.state.refused = {"version": data.get("version"), "reason": reason, "served_instead": None}
        log.error("collection %s: no intact version (the active one: %s); serving the configured model without an "
                  "index until a rebuild", self.name, reason)
        return Bundle(Pipeline(self.new_encoder()))

    def load_version(self, version: str, encoder: Encoder | None = None, checksums: bool = True) -> Bundle:
        s = self.settings
        return self.versions.load(version, encoder=encoder, device=s.device, use_gpu=s.use_gpu_index,
                                  engine=encoder.engine if encoder is not None else s.engine,
                                  engine_cache=s.engine_cache, checksums=checksums)

    def _warn_if_model_setting_differs(self, bundle: Bundle) -> None:
        wanted = self.model_dir()
        served = bundle.encoder.model_dir
        if wanted is not None and Path(wanted).resolve() != served:
            log.warning("collection %s: its configured model is %s but the active version was built with %s; "
                        "serving %s. Rebuild the index to switch models.", self.name, wanted, served, served)

    def activate(self, version: str, encoder: Encoder | None, just_built: bool = False,
                 since: Snapshot | None = None) -> Bundle:
        """Load a written version fully (verified), then point at it, then serve it: a failure changes nothing.
        A version this process `just_built` is not re-hashed (its checksums were taken from the files), and
        is discarded if it cannot be activated. With `since` (what a job read its corpus from), every change
        acknowledged after that read is applied to the new version before it is served, on either backend;
        if the served version changed meanwhile (a rollback), the activation fails and says so."""
        try:
            bundle = self.load_version(version, encoder, checksums=not just_built)
        except BaseException:
            if just_built:
                self.versions.discard(version)
            raise
        with self.served.lease() as served, self.change_lock:  # the lease keeps the old version open
            if self.deleted:
                bundle.close()
                raise NotFound(f"collection {self.name} was deleted while this ran; nothing was activated")
            if served is not None and served.version == version and since is None:
                # already served (a second click on rollback): the served bundle holds the change log's only
                # writer and every acknowledged change; a second copy of the version would lack what lands now
                bundle.close()
                self.versions.activate(version)
                self.state.refused = None
                return served
            try:
                if self.deleted:  # its folder may hold a new collection of the same name by now
                    raise NotFound(f"collection {self.name} was deleted while this ran; nothing was activated")
                if bundle.retriever is not None:  # loaded outside the lock: catch up with what landed since
                    bundle.retriever.refresh()
                seq = self.corpus_changes.carry_over(since, bundle, since.seq) if since is not None else 0
                self.versions.activate(version, expected=since.bundle.version if since is not None else None)
            except BaseException:
                bundle.close()
                if just_built:
                    self.versions.discard(version)
                raise
            # the pointer (and alias) name the new version now: serve it, whatever happens next
            previous = self.served.swap(bundle)
            self.state.refused = None
            if since is not None:  # what other replicas acknowledged before the alias moved
                try:
                    self.corpus_changes.carry_over(since, bundle, seq, served=previous)
                except Exception as exc:  # noqa: BLE001 - replicas re-apply a write that raced the move
                    log.error("version %s is served, but the changes other replicas acknowledged while it was "
                              "activated could not be read from version %s: %s", version, since.bundle.version, exc)
        protect = {previous.version} if previous is not None and previous.version else set()
        pruned = self.versions.prune(self.settings.keep_versions, protect=protect)
        if pruned:
            log.info("collection %s: pruned old versions %s", self.name, ", ".join(pruned))
        self.shared.prune_models()
        log.info("collection %s serves version %s: %s", self.name, version, self.reports.describe())
        return bundle

    def activate_existing(self, version: str) -> Bundle:
        """Serve a kept version again (roll back or forward): loaded and verified in full first, so a
        damaged or incomplete one changes nothing."""
        if version not in self.versions.versions():
            raise KeyError(version)
        return self.activate(version, self.bundle.encoder if self.bundle is not None else None)

    def close(self) -> None:
        """Stop serving: the bundle closes now, or when its last request ends."""
        self.served.close()

    def set_passages(self, passages: dict | None) -> dict | None:
        """The collection's passages from its next rebuild: checked against its model (InvalidRequest), then
        written to its collection.json; returns the setting a rebuild will use (None: whole documents)."""
        with self.state.change_lock:
            old = self.config.get("passages")
            self.config["passages"] = passages
            try:
                setting = self.corpus_builds.passage_setting(self.require_bundle().encoder)
                layout.update(self.settings.data_root, self.name, {"passages": passages})
            except BaseException:
                self.config["passages"] = old
                raise
        return None if setting is None else setting.to_dict()

    def summary(self) -> dict[str, Any]:
        """The collection as GET /admin/collections lists it."""
        bundle = self.bundle
        retriever = bundle.retriever if bundle is not None else None
        return {
            "name": self.name,
            "model": bundle.encoder.identity.name if bundle is not None else self.config.get("model"),
            "documents": bundle.layout.count(retriever) if retriever is not None else 0,
            "passages": self.config.get("passages"),
            "active_version": self.versions.active(),
            "dim": bundle.pipeline.output_dim() if bundle is not None else None,
            "created_at": iso(self.created_at),
        }

    def details(self) -> dict[str, Any]:
        """The summary plus the whitening and index a rebuild would use or the served version has."""
        bundle = self.bundle
        fit = bundle.pipeline.whitening if bundle is not None else None
        retriever = bundle.retriever if bundle is not None else None
        d = self.defaults.whitening()
        whitening = (fit.params.to_dict() if fit is not None else
                     {"auto": d["auto"]} if d.get("auto") else WhiteningParams(d["beta"], d["gamma"], d["dim"]).to_dict())
        index = retriever.spec.to_dict() if retriever is not None else self.defaults.index()
        return {**self.summary(), "whitening": whitening, "index": index, "status": self.status()}

    def status(self) -> str:
        if self.bundle is None:
            return "failed" if self.load_error else "loading"
        return "ready" if self.refused is None and not self.config.get("problem") else "degraded"


def resolve_model_choice(data_root: Path, model: str | None) -> str | None:
    """A collection's `model` as stored: None (the server's), `bundled`, or a folder name in models/;
    BadName or NotFound says what is wrong."""
    if model is None or model == "bundled":
        return model
    naming.check("model", model)
    folder = data_root / "models" / model
    try:
        found = (folder / "config.json").is_file()
    except (OSError, ValueError):  # a name the filesystem cannot hold
        found = False
    if not found:  # a resource that does not exist, like a missing import file: 404, not a malformed request
        raise NotFound(f"model {naming.shown(model)}: no model folder of that name in the data dir's models/ "
                       "(fine-tunes are written there; omit `model` for the server's own)", param="model")
    return model
