"""The service's live state: the served bundle, the batcher, the job runner, and the rebuild job."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from whitevec.index.build import build_version
from whitevec.index.faiss_index import IndexSpec
from whitevec.index.store import Document
from whitevec.index.versions import Bundle, VersionStore
from whitevec.models.encoder import Encoder
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import WhiteningParams

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

    # --- training -------------------------------------------------------------------------

    def train(self, ctx: JobContext, spec: dict, activate: bool) -> dict:
        """Run whitevec.models.training in a child process with bounded threads; optionally activate the result."""
        work = self.settings.data_dir / "training" / ctx.id
        work.mkdir(parents=True, exist_ok=True)
        spec = {**spec, "config": {**spec["config"], "threads": self.settings.train_threads}}
        (work / "config.json").write_text(json.dumps(spec), encoding="utf-8")
        threads = str(self.settings.train_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        with open(work / "stderr.log", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "whitevec.models.training", str(work / "config.json")],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            watcher = threading.Thread(target=self._stop_on_cancel, args=(ctx, proc), daemon=True)
            watcher.start()
            report, error = None, None
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                kind = event["event"]
                if kind == "start":
                    ctx.progress(0, 1, phase="training", classes=event["n_classes"], texts=event["n_texts"])
                elif kind == "step":
                    ctx.progress(event["step"], event["total"], phase="training", loss=round(event["loss"], 5))
                elif kind == "eval":
                    ctx.note(**{f"eval_{event['when']}": event["spearman"]})
                elif kind == "error":
                    error = event["error"]
                elif kind == "done":
                    report = event["report"]
            rc = proc.wait()
        ctx.check_cancelled()
        if report is None:
            tail = (work / "stderr.log").read_text(errors="replace")[-500:].strip()
            reason = error or (f"the training process was killed by signal {-rc} (out of memory?)" if rc < 0
                               else f"the training process exited with status {rc}: {tail}")
            raise RuntimeError(reason)
        result = {"model_dir": spec["out_dir"], "report": report}
        if activate:
            result["activation"] = self.activate_model(ctx, Path(spec["out_dir"]))
        return result

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
        if bundle.store is None or bundle.index is None or bundle.pipeline.whitening is None:
            raise RuntimeError("there is no index to re-encode; build one first, then activate the model")
        enc = bundle.encoder
        encoder = Encoder(model_dir, pooling=enc.pooling.mode, tokenizer=enc.tokenizer.kind, max_length=enc.max_length,
                          device=self.settings.device, batch_size=self.settings.max_batch)
        documents = bundle.store.all()
        return self.rebuild(ctx, documents, bundle.pipeline.whitening.params, bundle.index.spec, encoder=encoder)

    def training_spec(self, config: dict, examples: list[dict] | None, pairs: list[dict] | None,
                      pair_threshold: float, eval_path: Path | None, name: str | None) -> dict:
        """What the worker needs: the served model, the data, where to write."""
        enc = self.require_bundle().encoder
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        out = self.settings.data_dir / "models" / (name or f"{enc.identity.name}-amsoftmax-{stamp}")
        return {
            "model": {"path": str(enc.model_dir), "pooling": enc.pooling.mode, "tokenizer": enc.tokenizer.kind,
                      "max_length": enc.max_length},
            "device": self.settings.device, "config": config, "examples": examples, "pairs": pairs,
            "pair_threshold": pair_threshold, "eval_path": str(eval_path) if eval_path else None,
            "out_dir": str(out),
        }
