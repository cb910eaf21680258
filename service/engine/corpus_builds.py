"""Rebuilds of a collection's served corpus: versions encoded afresh, re-whitened from stored vectors, or merged
with new documents, written and then activated with the changes acknowledged meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from whitevec.index.build import BuildResult, build_version
from whitevec.index.documents import check_count
from whitevec.index.passage_rows import WHOLE, Layout, layout_for, resplit_report
from whitevec.index.spec import IndexSpec
from whitevec.index.store import Document, Documents
from whitevec.models.encoder import Encoder, EncoderPool, EncoderSpec, resolve_engine
from whitevec.models.engines import EQUIVALENT
from whitevec.models.errors import WhitevecError
from whitevec.models.passages import PassageSetting
from whitevec.models.tuning import AutoWhitening, plot_tuning
from whitevec.models.whitening import WhiteningParams

from .corpus_changes import Activate, CorpusChanges, Snapshot, release
from .errors import InvalidRequest, NotFound
from .jobs import JobContext
from .search_tuning import AutoSearch, search_tuner, write_plot
from .settings import Settings
from .state import CollectionDefaults, CollectionState
from .whitening_tuning import whitening_chooser


class CorpusBuilds:
    """New versions of a collection's corpus, each one job: what a rebuild asks for (over the collection's
    defaults), the corpus it reads (through `changes`, at a snapshot), the build, and its activation."""

    def __init__(self, state: CollectionState, defaults: CollectionDefaults, settings: Settings,
                 encoders: EncoderPool, changes: CorpusChanges, activate: Activate) -> None:
        """`activate` serves a written version (the owner's, which carries over changes through
        `changes.carry_over`)."""
        self.state = state
        self.defaults = defaults
        self.settings = settings
        self.encoders = encoders
        self.changes = changes
        self._activate = activate

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

    def rewhiten(self, ctx: JobContext | None, whitening: WhiteningParams, spec: IndexSpec,
                 auto: AutoWhitening | None = None, auto_search: AutoSearch | None = None) -> dict:
        """A new version of the served corpus from its stored raw vectors: whitening refitted with
        `whitening` (or tuned on `auto`'s pairs), index rebuilt as `spec`, the corpus never re-encoded.
        The served version is read when the job runs."""
        bundle = self.state.require_bundle()
        wanted = self.passage_setting(bundle.encoder)
        if wanted != bundle.layout.setting:  # passages re-split: every row is new, so encoded afresh
            documents, since = self.changes.whole_documents(bundle)
            return self.rebuild(ctx, documents, whitening, spec, encoder=bundle.encoder, since=since, auto=auto,
                                auto_search=auto_search)
        documents, raw, since = self.changes.corpus(bundle, with_raw=True)
        if ctx is not None:
            ctx.progress(len(documents), len(documents), phase="indexing")
        return self._build_and_activate(ctx, bundle.encoder, documents, whitening, spec, since, raw_vectors=raw,
                                        auto=auto, auto_search=auto_search, layout=bundle.layout,
                                        whole=bundle.layout.count(bundle.retriever))

    def merged(self, documents: list[Document]) -> tuple[Documents, Snapshot | None]:
        """The served corpus with `documents` (unique ids) added; one with an existing id replaces that
        document in place. Read when the job runs, so it merges into whatever is served then."""
        bundle = self.state.require_bundle()
        if bundle.retriever is None:
            return documents, None
        current, _, since = self.changes.corpus(bundle, with_raw=False)
        out = bundle.layout.documents(bundle.retriever, current, documents)
        if out is not current:
            current.close()
        try:
            check_count(len(out), self.settings.max_documents)
        except WhitevecError:
            release(out)
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
            release(documents)
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


def _job_result(result: BuildResult) -> dict:
    """What a rebuild job reports: the new version, counts, index, model and whitening."""
    m = result.manifest
    return {"version": result.version, "documents": m["documents"]["count"], "index": m["index"],
            "model": m["model"]["name"],
            "whitening": {k: m["whitening"][k] for k in ("version", "params", "rank", "output_dim", "jl_dim")
                          if k in m["whitening"]},
            "seconds": m["build_seconds"], "warnings": m["warnings"]}
