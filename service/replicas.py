"""Replicas on the Milvus backend: follow the alias another replica moves, and write through it."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from whitevec.index.milvus import alias_target
from whitevec.index.versions import Bundle

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("whitevec")


class AliasFollower:
    """Polls the Milvus alias (WHITEVEC_ALIAS_POLL_S) and serves the version it names, model and
    whitening loaded first; a no-op on the FAISS backend. Owns its thread: start() and stop()."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._follow_stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._alias_unknown: str | None = None  # logged once

    def follow_alias(self) -> str | None:
        """When the Milvus alias names another version's collection (another replica activated it), load
        that version's model and whitening, then serve them: never this model against another's index.
        Returns the version switched to, if any."""
        milvus, bundle = self.rt.versions.milvus, self.rt.bundle
        if milvus is None or bundle is None:
            return None
        target = alias_target(milvus.client, milvus.alias)
        if target is None or (bundle.version is not None and self.rt.versions.collection(bundle.version) == target):
            return None
        version = self.rt.versions.version_of(target)
        if version is None:
            if self._alias_unknown != target:
                self._alias_unknown = target
                log.error("the Milvus alias %s names collection %s, which no version in %s describes: give every "
                          "replica the same WHITEVEC_BUNDLE_DIR", milvus.alias, target, self.rt.versions.root)
            return None
        new = self.rt.versions.load(version, encoder=bundle.encoder, device=self.rt.settings.device,
                                 use_gpu=self.rt.settings.use_gpu_index, engine=bundle.encoder.engine,
                                 engine_cache=self.rt.settings.engine_cache)
        with self.rt.change_lock:
            if self.rt.bundle is not bundle:  # this replica activated a version while that one loaded
                new.close()
                return None
            self.rt.served.swap(new)
            self.rt.refused = None
        log.info("another replica activated version %s; serving it: %s", version, self.rt.reports.describe())
        return version

    def start(self) -> None:
        """With the Milvus backend: poll the alias every WHITEVEC_ALIAS_POLL_S seconds."""
        if self.rt.versions.milvus is None:
            return
        self._follow_stop.clear()
        self._follower = threading.Thread(target=self._follow, name="whitevec-alias", daemon=True)
        self._follower.start()

    def stop(self) -> None:
        self._follow_stop.set()
        if self._follower is not None:
            self._follower.join(timeout=30)
            self._follower = None

    def _follow(self) -> None:
        while not self._follow_stop.wait(self.rt.settings.alias_poll_s):
            try:
                self.follow_alias()
            except Exception as exc:  # noqa: BLE001 - Milvus unreachable, a damaged version: keep serving
                log.warning("could not follow the Milvus alias (serving %s meanwhile): %s",
                            self.rt.bundle.version if self.rt.bundle else None, exc)

    def alias_moved(self, bundle: Bundle) -> bool:
        """With Milvus: the alias no longer names `bundle`'s collection (another replica activated one)."""
        milvus = self.rt.versions.milvus
        if milvus is None or bundle.version is None:
            return False
        return alias_target(milvus.client, milvus.alias) != self.rt.versions.collection(bundle.version)

    def follow_before_write(self) -> Bundle:
        """The bundle a write goes to: the one the alias names (followed now if another replica moved it)."""
        bundle = self.rt.require_bundle()
        if self.alias_moved(bundle):
            self.follow_alias()
        return self.rt.require_bundle()
