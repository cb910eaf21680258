"""Changes to a collection's served corpus: upserts and deletes, compaction, and carrying changes acknowledged
during a job over to the version it built."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from whitevec.index.build import build_version
from whitevec.index.bundle import Bundle
from whitevec.index.store import Document, Documents
from whitevec.index.versions import ServedVersionChanged
from whitevec.models.encoder import Encoder
from whitevec.models.passages import PassageSetting
from whitevec.models.whitening import WhiteningParams

from .errors import Conflict, InvalidRequest
from .replicas import AliasFollower
from .reports import Reports
from .settings import Settings
from .state import CollectionDefaults, CollectionState

log = logging.getLogger("whitevec")


class Activate(Protocol):
    """The owner's activation of a written version (loaded, verified, pointed at, served)."""

    def __call__(self, version: str, encoder: Encoder | None, just_built: bool = False,
                 since: Snapshot | None = None) -> Bundle: ...


class CorpusChanges:
    """O(change) writes to the served version, and the consistent reads a rebuild starts from. Every change
    takes the collection's change lock; the backend is reached only through the Retriever protocol."""

    def __init__(self, state: CollectionState, defaults: CollectionDefaults, settings: Settings,
                 follower: AliasFollower, reports: Reports, activate: Activate, jobs_busy: Callable[[], bool]) -> None:
        """`activate` serves a compacted version; `jobs_busy` says a job is running, which carries pending
        changes over itself (so compaction waits for it)."""
        self.state = state
        self.defaults = defaults
        self.settings = settings
        self.follower = follower
        self.reports = reports
        self._activate = activate
        self._jobs_busy = jobs_busy

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
        with self.state.change_lock:  # documents and snapshot from the same moment
            since = Snapshot(bundle, bundle.retriever.sequence())
            if with_raw:
                self.check_raw_vectors(bundle)
            docs, raw = bundle.retriever.documents(bundle.retriever.stored_raw() if with_raw else None)
        return docs, raw, since

    def whole_documents(self, bundle: Bundle) -> tuple[Documents, Snapshot]:
        """The served corpus as whole documents (a collection with passages: reassembled from its rows), for a
        rebuild that encodes afresh, and the snapshot it was read at."""
        rows, _, since = self.corpus(bundle, with_raw=False)
        documents = bundle.layout.documents(bundle.retriever, rows, [])
        if documents is not rows:
            release(rows)
        return documents, since

    def change_documents(self, upserts: list[Document], deletes: list[str]) -> dict:
        """Upsert and/or delete documents of the served version, durable before returning: new texts are
        encoded with the served model (outside the change lock: searches and other writers never wait on
        the model) and transformed with the served whitening (no refit), then logged to the version's
        change log with a journal sequence number and swapped into the view searches read. O(change);
        once pending changes pass WHITEVEC_COMPACT_CHANGES (and a quarter of the corpus) they are folded
        into a new version. With replicas on a shared backend, the write goes to the version the shared switch names: a
        replica that has not followed a switch yet follows it first, and re-applies a change that raced one."""
        with self.state.served.lease() as bundle:
            self.check_change(bundle, upserts, deletes)
            encoded = self.encode_upserts(bundle, upserts)
        return self.commit_change(upserts, deletes, encoded)

    def commit_change(self, upserts: list[Document], deletes: list[str], encoded: Encoded) -> dict:
        """The second half of change_documents, for texts already encoded (the service encodes them through
        the batcher, so the writer thread holds nothing but this O(change) commit)."""
        with self.state.change_lock:
            bundle = self.follower.follow_before_write()
            done = self._apply_change(bundle, upserts, deletes, encoded)
            if self.follower.alias_moved(bundle):
                bundle = self.follower.follow_before_write()
                done = self._apply_change(bundle, upserts, deletes, encoded)
            version, retriever = bundle.version, bundle.retriever
            pending = retriever.pending_changes()  # 0 for a backend that compacts its own segments
            if (pending > self.settings.compact_changes and pending > retriever.count() // 4
                    and not self._jobs_busy()):  # a job running here carries them over instead
                version = self.compact(bundle)
            return {"version": version, "missing": done.missing, "deleted": done.deleted, "upserted": done.upserted}

    def check_change(self, bundle: Bundle | None, upserts: list[Document], deletes: list[str]) -> None:
        """What a change must satisfy before anything is encoded (the served version takes changes, the count
        stays within bounds); raises the error to answer."""
        if bundle is None:
            self.state.require_bundle()  # says why: deleted, loading, or failed to load
        if bundle.retriever is None or bundle.pipeline.whitening is None:
            raise Conflict(self.reports.no_index_message())
        self.check_raw_vectors(bundle)
        bundle.layout.check(upserts)
        after = bundle.layout.count_after(bundle.retriever, [d.id for d in upserts], deletes)
        if after < 2:
            raise Conflict(f"the change would leave {after} document(s); an index needs at least 2 "
                           "(rebuild with new documents instead)")
        if after > self.settings.max_documents:
            raise InvalidRequest(f"the corpus would have {after} documents, above WHITEVEC_MAX_DOCUMENTS "
                                 f"({self.settings.max_documents})", param="documents")

    @staticmethod
    def encode_upserts(bundle: Bundle, upserts: list[Document]) -> Encoded:
        enc = bundle.encoder
        rows = bundle.layout.rows(upserts)
        raw = enc.encode([d.text for d in rows]).vectors if rows else np.zeros((0, enc.dim), np.float32)
        return Encoded(enc, bundle.layout.setting, rows, raw)

    def _apply_change(self, bundle: Bundle, upserts: list[Document], deletes: list[str], encoded: Encoded):
        """Commit a change to `bundle` (change lock held); re-encodes if a switch brought another model or
        another passage setting."""
        self.check_change(bundle, upserts, deletes)
        if not _same_vectors(encoded.encoder, bundle.encoder) or encoded.setting != bundle.layout.setting:
            encoded = self.encode_upserts(bundle, upserts)
        return bundle.layout.change(bundle.retriever, upserts, encoded.rows, encoded.raw, deletes)

    def compact(self, bundle: Bundle) -> str:
        """Fold a version's logged changes into a new version (same model, same fit, index type kept)."""
        with self.state.change_lock:
            documents, raw, _ = self.corpus(bundle, with_raw=True)
            fit = bundle.pipeline.whitening
            log.info("compacting %d pending changes of version %s", bundle.retriever.pending_changes(), bundle.version)
            try:
                asked = bundle.requested_whitening()
                result = build_version(self.state.versions, bundle.encoder, documents,
                                       WhiteningParams(**asked) if asked else fit.params, bundle.retriever.spec,
                                       min_approx=self.settings.min_approx_vectors, raw_vectors=raw, fit=fit,
                                       bm25=self.defaults.bm25(), search=bundle.manifest.get("search"),
                                       passages=bundle.layout.manifest(bundle.layout.count(bundle.retriever),
                                                                       len(documents)))
            finally:
                release(documents)
            self._activate(result.version, bundle.encoder, just_built=True)
            return result.version

    def carry_over(self, since: Snapshot, new: Bundle, after: int, served: Bundle | None = None) -> int:
        """Apply to `new` every change acknowledged to the served version after journal sequence `after`
        (change lock held); returns the head it read up to. The served version (`served`, default the one
        served now) must be the one the job read: after a rollback its changes went elsewhere, and the job
        must not silently undo that."""
        old = since.bundle
        now = served if served is not None else self.state.bundle
        if now is not old:
            name = now.version if now is not None else None
            raise ServedVersionChanged(f"the served version changed while this job ran (it read version {old.version}; "
                                       f"version {name} is served now): run the job again")
        head = old.retriever.sequence()
        ids = old.retriever.changed_since(after)
        if not ids:
            return head
        if not (old.layout.rows_are_documents and new.layout.rows_are_documents):  # documents, split for `new`
            live, deletes = old.layout.changed(old.retriever, ids)
            docs = [found[0] for i in live if (found := old.layout.get(old.retriever, i)) is not None]
            encoded = self.encode_upserts(new, docs)
            new.layout.change(new.retriever, docs, encoded.rows, encoded.raw, deletes)
            log.info("carried %d upserted and %d deleted documents acknowledged during the job over to version %s "
                     "(split into its passages: its rows are its own)", len(docs), len(deletes), new.version)
            return head
        docs, raw = old.retriever.fetch(ids)  # rows are documents: carried as they are
        present = {d.id for d in docs}
        deletes = [i for i in ids if i not in present]
        if raw is None or not _same_vectors(old.encoder, new.encoder):
            raw = new.encoder.encode([d.text for d in docs]).vectors if docs else np.zeros((0, new.encoder.dim),
                                                                                               np.float32)
        new.retriever.change(docs, raw, deletes)
        log.info("carried %d upserts and %d deletes acknowledged during the job over to version %s",
                 len(docs), len(deletes), new.version)
        return head


@dataclass(frozen=True)
class Encoded:
    """An upsert's documents as the rows of the layout they were split for, with the rows' pooled vectors."""

    encoder: Encoder
    setting: PassageSetting | None
    rows: list[Document]
    raw: np.ndarray


@dataclass(frozen=True)
class Snapshot:
    """The served version and its journal head at the moment a job read the corpus."""

    bundle: Bundle
    seq: int


def _same_vectors(a: Encoder, b: Encoder) -> bool:
    """Two encoders give the same raw vectors (same weights, same engine)."""
    return a.identity.fingerprint == b.identity.fingerprint and a.engine == b.engine


def release(documents: Documents) -> None:
    """Close a served corpus's own connection once its build is done (a plain list has none)."""
    close = getattr(documents, "close", None)
    if close is not None:
        close()
