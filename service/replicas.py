"""Replicas: follow the shared switch (the Milvus alias) that another replica moves, and write through it."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from whitevec.index.versions import Bundle, VersionDamaged

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
        """When the shared switch names another version (another replica activated it), load that
        version's model and whitening, then serve them: never this model against another's index.
        Returns the version switched to, if any."""
        bundle = self.rt.bundle
        if bundle is None:
            return None
        try:
            version = self.rt.versions.switched_to()
        except VersionDamaged as exc:
            if self._alias_unknown != str(exc):
                self._alias_unknown = str(exc)
                log.error("%s", exc)
            return None
        if version is None or version == bundle.version:
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
        if not self.rt.versions.followable:
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
        """The shared switch no longer names `bundle`'s version (another replica activated one)."""
        if not self.rt.versions.followable or bundle.version is None:
            return False
        try:
            return self.rt.versions.switched_to() not in (None, bundle.version)
        except VersionDamaged:
            return False
    def follow_before_write(self) -> Bundle:
        """The bundle a write goes to: the one the alias names (followed now if another replica moved it)."""
        bundle = self.rt.require_bundle()
        if self.alias_moved(bundle):
            self.follow_alias()
        return self.rt.require_bundle()
