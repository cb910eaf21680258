"""The served corpus's operations: upserts and deletes, compaction, rebuilds, re-whitening and carry-over."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from whitevec.index.build import BuildResult, build_version
from whitevec.index.bundle import Bundle
from whitevec.index.documents import check_count
from whitevec.index.passage_rows import WHOLE, Layout, layout_for, resplit_report
from whitevec.index.spec import IndexSpec
from whitevec.index.store import Document, Documents
from whitevec.index.versions import ServedVersionChanged
from whitevec.models.encoder import Encoder, EncoderPool, EncoderSpec, resolve_engine
from whitevec.models.engines import EQUIVALENT
from whitevec.models.errors import WhitevecError
from whitevec.models.passages import PassageSetting
from whitevec.models.tuning import AutoWhitening, plot_tuning
from whitevec.models.whitening import WhiteningParams

from .errors import Conflict, InvalidRequest, NotFound
from .jobs import JobContext
from .replicas import AliasFollower
from .reports import Reports
from .search_tuning import AutoSearch, search_tuner, write_plot
from .settings import Settings
from .state import CollectionDefaults, CollectionState
from .whitening_tuning import whitening_chooser

log = logging.getLogger("whitevec")


class Activate(Protocol):
    """The owner's activation of a written version (loaded, verified, pointed at, served)."""

    def __call__(self, version: str, encoder: Encoder | None, just_built: bool = False,
                 since: Snapshot | None = None) -> Bundle: ...


class CorpusOps:
    """Changes and rebuilds of a collection's served corpus. Every change and activation takes the
    collection's change lock; the backend is reached only through the Retriever protocol."""

    def __init__(self, state: CollectionState, defaults: CollectionDefaults, settings: Settings,
                 encoders: EncoderPool, follower: AliasFollower, reports: Reports, activate: Activate,
                 jobs_busy: Callable[[], bool]) -> None:
        """`activate` serves a written version (the owner's, which carries over changes through
        `carry_over`); `jobs_busy` says a job is running, which carries pending changes over itself."""
        self.state = state
        self.defaults = defaults
        self.settings = settings
        self.encoders = encoders
        self.follower = follower
        self.reports = reports
        self._activate = activate
        self._jobs_busy = jobs_busy

    def whitening_params(self, beta: float | None, gamma: float | None, dim: int | None) -> WhiteningParams:
        """What a rebuild asked for, over the collection's defaults (else WHITEVEC_WHITEN_*)."""
        d = self.defaults.whitening()
        return WhiteningParams(d["beta"] if beta is None else beta, d["gamma"] if gamma is None else gamma,
                               d["dim"] if dim is None else dim)

    @staticmethod
    def check_whitening_dim(params: WhiteningParams, encoder: Encoder) -> None:
        if params.dim is not None and params.dim > encoder.dim:
            raise InvalidRequest(f"whitening dim {params.dim} is above the model's {encoder.dim} dims",
                                 param="whitening.dim")

    def index_spec(self, fields: dict | None, n: int | None = None) -> IndexSpec:
        """The asked index spec over the defaults; checked against n documents when given."""
        asked = {k: v for k, v in (fields or {}).items() if v is not None}
        defaults = self.defaults.index()
        # the collection's defaults fill in only when the type is theirs (its nlist means nothing to hnsw)
        fields = {**defaults, **asked} if asked.get("type", defaults["type"]) == defaults["type"] else asked
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
            _release(rows)
        return documents, since

    def rewhiten(self, ctx: JobContext | None, whitening: WhiteningParams, spec: IndexSpec,
                 auto: AutoWhitening | None = None, auto_search: AutoSearch | None = None) -> dict:
        """A new version of the served corpus from its stored raw vectors: whitening refitted with
        `whitening` (or tuned on `auto`'s pairs), index rebuilt as `spec`, the corpus never re-encoded.
        The served version is read when the job runs."""
        bundle = self.state.require_bundle()
        wanted = self.passage_setting(bundle.encoder)
        if wanted != bundle.layout.setting:  # passages re-split: every row is new, so encoded afresh
            documents, since = self.whole_documents(bundle)
            return self.rebuild(ctx, documents, whitening, spec, encoder=bundle.encoder, since=since, auto=auto,
                                auto_search=auto_search)
        documents, raw, since = self.corpus(bundle, with_raw=True)
        if ctx is not None:
            ctx.progress(len(documents), len(documents), phase="indexing")
        return self._build_and_activate(ctx, bundle.encoder, documents, whitening, spec, since, raw_vectors=raw,
                                        auto=auto, auto_search=auto_search, layout=bundle.layout,
                                        whole=bundle.layout.count(bundle.retriever))

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
                _release(documents)
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

    def merged(self, documents: list[Document]) -> tuple[Documents, Snapshot | None]:
        """The served corpus with `documents` (unique ids) added; one with an existing id replaces that
        document in place. Read when the job runs, so it merges into whatever is served then."""
        bundle = self.state.require_bundle()
        if bundle.retriever is None:
            return documents, None
        current, _, since = self.corpus(bundle, with_raw=False)
        out = bundle.layout.documents(bundle.retriever, current, documents)
        if out is not current:
            current.close()
        try:
            check_count(len(out), self.settings.max_documents)
        except WhitevecError:
            _release(out)
            raise
        return out, since

    def check_for_build(self, documents: list[Document], encoder: Encoder) -> None:
        """What a rebuild with `documents` must satisfy before it is queued: the collection's passages can hold
        them (ReservedName otherwise)."""
        layout_for(self.passage_setting(encoder), encoder.tokenizer).check(documents)

    def passage_setting(self, encoder: Encoder) -> PassageSetting | None:
        """The collection's passage setting for a build with `encoder` (None: whole documents), checked
        against the model's max length."""
        try:
            return PassageSetting.resolve(self.defaults.passages(), encoder.max_length)
        except ValueError as exc:
            field = "passages.overlap" if "overlap" in str(exc).split(":")[0] else "passages.max_tokens"
            raise InvalidRequest(f"collection {self.state.name}: {exc}", param=field) from None

    def rebuild_encoder(self) -> Encoder:
        """The served model on the engine WHITEVEC_ENGINE gives on this machine now: a rebuild encodes every
        document afresh, so it is where a version changes engine (the served encoder itself when both give
        the same vectors)."""
        served = self.state.require_bundle().encoder
        s = self.settings
        wanted = resolve_engine(s.engine, s.device)
        if EQUIVALENT.get(wanted) == EQUIVALENT.get(served.engine):
            return served
        return self.encoders.get(EncoderSpec(served.model_dir, served.pooling.mode, served.tokenizer.kind,
                                                served.max_length, wanted, s.device, s.max_batch, s.engine_cache))

    def rebuild(self, ctx: JobContext | None, documents: Documents, whitening: WhiteningParams,
                spec: IndexSpec, encoder: Encoder | None = None, progress_bar: bool = False,
                since: Snapshot | None = None, raw_vectors: np.ndarray | None = None,
                auto: AutoWhitening | None = None, auto_search: AutoSearch | None = None) -> dict:
        """Encode with `encoder`, or the model served when this runs, fit (and with `auto`, tune (β, γ, dim) on
        its labelled pairs), index, write a version, swap it in.
        `since`: the served corpus was read at that snapshot (merge, new model): later changes carry over.
        `raw_vectors`: the documents' pooled vectors by this encoder, already encoded (on a Ray cluster)."""
        encoder = encoder or self.rebuild_encoder()
        self.check_whitening_dim(whitening, encoder)
        layout = layout_for(self.passage_setting(encoder), encoder.tokenizer)
        if raw_vectors is not None and layout.setting is not None:
            raise WhitevecError(f"collection {self.state.name} splits documents into passages, which encoding on "
                                "a Ray cluster does not do yet: build it without --ray")
        if ctx is not None and layout.setting is not None:
            ctx.progress(0, len(documents), phase="splitting")
        whole = len(documents)
        documents = layout.rows(documents)

        def on_progress(done: int, total: int) -> None:
            if ctx is not None:
                ctx.check_cancelled()
                ctx.progress(done, total, phase="encoding")

        return self._build_and_activate(ctx, encoder, documents, whitening, spec, since, on_progress, progress_bar,
                                        raw_vectors=raw_vectors, reencoded=True, auto=auto, auto_search=auto_search,
                                        layout=layout, whole=whole)

    def _build_and_activate(self, ctx: JobContext | None, encoder: Encoder, documents: Documents,
                            whitening: WhiteningParams, spec: IndexSpec, since: Snapshot | None,
                            on_progress: Callable[[int, int], None] | None = None, progress_bar: bool = False,
                            raw_vectors: np.ndarray | None = None, reencoded: bool = False,
                            auto: AutoWhitening | None = None, auto_search: AutoSearch | None = None,
                            layout: Layout = WHOLE, whole: int | None = None) -> dict:
        """Write the version (the corpus released after), record it in the job, then activate it with the
        changes acknowledged since `since`: the one path every rebuild-like job ends in. The served version's
        default search carries over unless `auto_search` chooses it anew. `documents` are rows of `layout`
        (whole documents without one); `whole`: how many documents they hold (the served count without it)."""
        tuning: dict = {}
        choose = whitening_chooser(ctx, encoder, auto, tuning) if auto is not None else None
        bm25 = self.defaults.bm25()
        searching: dict = {}
        tune_search = search_tuner(ctx, encoder, auto_search, bm25, searching) if auto_search is not None else None
        served = self.state.bundle
        before = served.layout.setting if served is not None and served.retriever is not None else None
        try:
            result = build_version(self.state.versions, encoder, documents, whitening, spec, on_progress, progress_bar,
                                   min_approx=self.settings.min_approx_vectors, raw_vectors=raw_vectors,
                                   choose=choose, bm25=bm25, tune_search=tune_search,
                                   search=(served.manifest or {}).get("search") if served is not None else None,
                                   passages=layout.manifest(len(documents) if whole is None else whole, len(documents)))
        except OSError as exc:
            if self.state.deleted:  # its folder was renamed away under the build
                raise NotFound(f"collection {self.state.name} was deleted while this job ran; nothing was built") from exc
            raise
        finally:
            _release(documents)
        if ctx is not None:
            try:
                ctx.check_cancelled()
                ctx.checkpoint(built_version=result.version)
            except BaseException:  # cancelled (or no record) before activation: the version is never served
                self.state.versions.discard(result.version)
                raise
        self._activate(result.version, encoder, just_built=True, since=since)
        if tuning and ctx is not None:  # the picture of the trade-off, served to admins beside the job
            plot_tuning(tuning, encoder.identity.name, self.settings.data_dir / "reports" / f"{ctx.id}.png")
            tuning["plot"] = f"/admin/jobs/{ctx.id}/plot.png"
        if searching and ctx is not None:  # plot.png is the whitening's when both were tuned
            for name in [f"{ctx.id}-search.png", *([] if tuning else [f"{ctx.id}.png"])]:
                write_plot(searching, self.settings.data_dir / "reports" / name)
            searching["plot"] = f"/admin/jobs/{ctx.id}/plot.png?kind=search"
        return {**_job_result(result), "reencoded": reencoded, **resplit_report(result.manifest, before), **({"tuning": tuning} if tuning else {}),
                **({"search_tuning": searching} if searching else {})}


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


def _release(documents: Documents) -> None:
    """Close a served corpus's own connection once its build is done (a plain list has none)."""
    close = getattr(documents, "close", None)
    if close is not None:
        close()


def _job_result(result: BuildResult) -> dict:
    """What a rebuild job reports: the new version, counts, index, model and whitening."""
    m = result.manifest
    return {"version": result.version, "documents": m["documents"]["count"], "index": m["index"],
            "model": m["model"]["name"],
            "whitening": {k: m["whitening"][k] for k in ("version", "params", "rank", "output_dim", "jl_dim")
                          if k in m["whitening"]},
            "seconds": m["build_seconds"], "warnings": m["warnings"]}
