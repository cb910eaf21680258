"""The service's live state: the served bundle, the batcher, the job runner, and the rebuild job."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from index.build import build_version
from index.faiss_index import IndexSpec
from index.store import Document
from index.versions import Bundle, VersionStore
from models.encoder import Encoder
from models.pipeline import Pipeline
from models.whitening import WhiteningParams

from .batcher import Batcher
from .errors import NotReady
from .jobs import JobContext, JobRunner
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("whitevec")

DEMO_CORPUS = Path(__file__).resolve().parent / "demo" / "corpus.jsonl"


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.import_dir.mkdir(parents=True, exist_ok=True)
        self.versions = VersionStore(settings.data_dir)
        self.jobs = JobRunner(settings.data_dir / "jobs.sqlite")
        self.metrics = Metrics()
        self.batcher = Batcher(settings.max_batch, settings.max_wait_ms, settings.max_queue,
                               on_batch=self.metrics.batch_size.observe)
        self.metrics.bind(lambda: self.batcher.pending,
                          lambda: self.bundle.index.count if self.bundle and self.bundle.index else 0,
                          self.jobs.counts)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token_generated = token is None
        self.admin_token = token or secrets.token_urlsafe(24)
        self.bundle: Bundle | None = None
        self.load_error: str | None = None

    # --- loading and swapping -------------------------------------------------------------

    def new_encoder(self, model_dir: Path | None = None) -> Encoder:
        s = self.settings
        return Encoder(model_dir if model_dir is not None else s.model_dir, pooling=s.pooling,
                       tokenizer=s.tokenizer, max_length=s.max_length, device=s.device, batch_size=s.max_batch)

    def load(self) -> None:
        """Load the active version, or the configured model alone when no index exists yet (once)."""
        if self.bundle is not None:
            return
        try:
            self.versions.cleanup_partial()
            active = self.versions.active()
            if active is None:
                self.bundle = Bundle(Pipeline(self.new_encoder()))
            else:
                self.bundle = self.versions.load(active, device=self.settings.device,
                                                 use_gpu=self.settings.use_gpu_index)
                self._warn_if_model_setting_differs()
        except Exception as exc:
            self.load_error = str(exc)
            log.error("whitevec could not load its model bundle: %s", exc)
            raise
        log.info("whitevec ready: %s", self.describe())

    def _warn_if_model_setting_differs(self) -> None:
        wanted = self.settings.model_dir
        served = self.bundle.encoder.model_dir
        if wanted is not None and Path(wanted).resolve() != served:
            log.warning("WHITEVEC_MODEL_DIR is %s but the active version was built with %s; serving %s. "
                        "Rebuild the index (whitevec index build --model …) to switch models.",
                        wanted, served, served)

    def describe(self) -> str:
        b = self.bundle
        if b is None:
            return "loading"
        index = f"{b.index.spec.type} index of {b.index.count} vectors on {b.index.device}" if b.index else "no index"
        return f"model {b.encoder.identity.name} ({b.encoder.pooling.mode}) on {b.encoder.device}, {index}"

    def require_bundle(self) -> Bundle:
        if self.bundle is None:
            raise NotReady(self.load_error or "the model is still loading; retry shortly",
                           headers={"Retry-After": "2"})
        return self.bundle

    def activate(self, version: str, encoder: Encoder | None) -> Bundle:
        """Load a written version fully, then point at it, then serve it: a failure changes nothing."""
        bundle = self.versions.load(version, encoder=encoder, device=self.settings.device,
                                    use_gpu=self.settings.use_gpu_index)
        self.versions.activate(version)
        self.bundle = bundle
        pruned = self.versions.prune(self.settings.keep_versions)
        if pruned:
            log.info("pruned old versions %s", ", ".join(pruned))
        log.info("serving version %s: %s", version, self.describe())
        return bundle

    # --- rebuilds -------------------------------------------------------------------------

    def whitening_params(self, beta: float | None, gamma: float | None, dim: int | None) -> WhiteningParams:
        s = self.settings
        return WhiteningParams(s.whiten_beta if beta is None else beta, s.whiten_gamma if gamma is None else gamma,
                               s.whiten_dim if dim is None else dim)

    def index_spec(self, fields: dict | None) -> IndexSpec:
        fields = {k: v for k, v in (fields or {}).items() if v is not None}
        fields.setdefault("type", self.settings.index_type)
        return IndexSpec(**fields)

    def rebuild(self, ctx: JobContext | None, documents: list[Document], whitening: WhiteningParams,
                spec: IndexSpec, encoder: Encoder | None = None, progress_bar: bool = False) -> dict:
        """Encode with the served model (or `encoder`), fit, index, write a version, swap it in."""
        encoder = encoder or self.require_bundle().encoder

        def on_progress(done: int, total: int) -> None:
            if ctx is not None:
                ctx.check_cancelled()
                ctx.progress(done, total, phase="encoding")

        result = build_version(self.versions, encoder, documents, whitening, spec, on_progress, progress_bar)
        if ctx is not None:
            ctx.check_cancelled()
        self.activate(result.version, encoder)
        m = result.manifest
        return {"version": result.version, "documents": m["documents"]["count"], "index": m["index"],
                "whitening": {k: m["whitening"][k] for k in ("version", "params", "rank", "output_dim", "jl_dim")},
                "seconds": m["build_seconds"], "warnings": m["warnings"]}
