"""Replicas: follow the shared switch (the backend's alias) that another replica moves, and write through it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from whitevec.index.bundle import Bundle
from whitevec.index.versions import VersionDamaged
from whitevec.models.encoder import Encoder

from .state import CollectionState

log = logging.getLogger("whitevec")


class AliasFollower:
    """Serves the version a collection's shared switch names, model and whitening loaded first; a no-op where
    the backend has none (FAISS). The runtime's sync thread calls `follow_alias` every WHITEVEC_ALIAS_POLL_S."""

    def __init__(self, state: CollectionState, load_version: Callable[[str, Encoder], Bundle],
                 describe: Callable[[], str]) -> None:
        """`load_version(version, encoder)`: that version loaded in full, reusing `encoder` when it has the
        same model; `describe`: the one-line log line of what is served."""
        self.state = state
        self._load_version = load_version
        self._describe = describe
        self._alias_unknown: str | None = None  # logged once

    def follow_alias(self) -> str | None:
        """When the shared switch names another version (another replica activated it), load that
        version's model and whitening, then serve them: never this model against another's index.
        Returns the version switched to, if any."""
        bundle = self.state.bundle
        if bundle is None:
            return None
        try:
            version = self.state.versions.switched_to()
        except VersionDamaged as exc:
            if self._alias_unknown != str(exc):
                self._alias_unknown = str(exc)
                log.error("%s", exc)
            return None
        if version is None or version == bundle.version:
            return None
        new = self._load_version(version, bundle.encoder)
        with self.state.change_lock:
            # this replica activated a version while that one loaded (or re-pointed the alias at its own)
            try:
                moved = self.state.bundle is not bundle or self.state.versions.switched_to() != version
            except BaseException:
                new.close()
                raise
            if moved:
                new.close()
                return None
            self.state.served.swap(new)
            self.state.refused = None
        log.info("collection %s: another replica activated version %s; serving it: %s", self.state.name, version,
                 self._describe())
        return version

    def alias_moved(self, bundle: Bundle) -> bool:
        """The shared switch no longer names `bundle`'s version (another replica activated one)."""
        if not self.state.versions.followable or bundle.version is None:
            return False
        try:
            return self.state.versions.switched_to() not in (None, bundle.version)
        except VersionDamaged:
            return False

    def follow_before_write(self) -> Bundle:
        """The bundle a write goes to: the one the alias names (followed now if another replica moved it)."""
        bundle = self.state.require_bundle()
        if self.alias_moved(bundle):
            self.follow_alias()
        return self.state.require_bundle()
