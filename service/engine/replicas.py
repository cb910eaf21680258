"""Replicas: follow the shared switch (the Milvus alias) that another replica moves, and write through it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from whitevec.index.bundle import Bundle
from whitevec.index.versions import VersionDamaged

if TYPE_CHECKING:
    from .collection import Collection

log = logging.getLogger("whitevec")


class AliasFollower:
    """Serves the version a collection's Milvus alias names, model and whitening loaded first; a no-op on
    the FAISS backend. The runtime's sync thread calls `follow_alias` every WHITEVEC_ALIAS_POLL_S."""

    def __init__(self, rt: Collection) -> None:
        self.rt = rt
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
        new = self.rt.load_version(version, bundle.encoder)
        with self.rt.change_lock:
            # this replica activated a version while that one loaded (or re-pointed the alias at its own)
            try:
                moved = self.rt.bundle is not bundle or self.rt.versions.switched_to() != version
            except BaseException:
                new.close()
                raise
            if moved:
                new.close()
                return None
            self.rt.served.swap(new)
            self.rt.refused = None
        log.info("collection %s: another replica activated version %s; serving it: %s", self.rt.name, version,
                 self.rt.reports.describe())
        return version

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
