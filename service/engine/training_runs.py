"""Training supervision: an AM-Softmax fine-tune in a child process, its name, its report, its activation."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path

from whitevec.index.bundle import Bundle
from whitevec.models.encoder import EncoderPool
from whitevec.models.evaluation import cosine_spearman, encode_unique, read_pairs
from whitevec.models.training import paraphrase_hit_at_1
from whitevec.models.training_worker import finite
from whitevec.models.tuning import AutoWhitening

from .collection import Collection
from .errors import InvalidRequest
from .jobs import JobContext
from .settings import Settings

log = logging.getLogger("whitevec")

#: Suffixes earlier fine-tunes added to a model name; stripped so names never grow.
_FINETUNE_SUFFIX = re.compile(r"(-ft-\d{8}T\d{6}-[0-9a-f]{4}|-amsoftmax(-\d{8}T\d{6})?)$")
MODEL_BASE_CHARS = 40


def die_with_parent() -> None:
    """In a child, before exec: the kernel kills it when the server dies (kill -9 included), so a
    training process never outlives the job that supervises it (Linux PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class TrainingSupervisor:
    """Runs `whitevec.models.training_worker` in a child that dies with the server, streams its JSON events into
    the job, reserves the output name until the job ends, and activates the result on request."""

    def __init__(self, settings: Settings, encoders: EncoderPool, prune_models: Callable[[], object]) -> None:
        """`prune_models`: the runtime's pruning of unused fine-tunes, run when a job keeps its model unserved."""
        self.settings = settings
        self.encoders = encoders
        self._prune_models = prune_models
        self._names_lock = threading.Lock()
        self._reserved_names: set[str] = set()  # fine-tune names of queued and running training jobs
        self.training_command = [sys.executable, "-m", "whitevec.models.training_worker"]  # + the job's config file

    def model_output_dir(self, name: str | None, base: str) -> Path:
        """Where a fine-tune is written: `name`, or a bounded unique name from `base` (the served model's name).
        The name stays reserved until `release_model_name` (a training job's end): two jobs never share one."""
        models = self.settings.data_root / "models"
        if name is not None:
            out = models / name
            with self._names_lock:
                if out.exists() or name in self._reserved_names:
                    raise InvalidRequest(f"a model named {name!r} already exists in the data dir or is being "
                                         "trained; choose another `name`, or omit it for a generated one",
                                         param="name")
                self._reserved_names.add(name)
            return out
        while (stripped := _FINETUNE_SUFFIX.sub("", base)) != base:
            base = stripped
        base = base[:MODEL_BASE_CHARS] or "model"
        while True:
            out = models / f"{base}-ft-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
            with self._names_lock:
                if not out.exists() and out.name not in self._reserved_names:
                    self._reserved_names.add(out.name)
                    return out

    def release_model_name(self, out: Path) -> None:
        with self._names_lock:
            self._reserved_names.discard(out.name)

    def training_spec(self, col: Collection, config: dict, examples: list[dict] | None, pairs: list[dict] | None,
                      pair_threshold: float, eval_path: Path | None, out_dir: Path) -> dict:
        """What the worker needs: the model `col` serves when the job runs, the data, where to write."""
        enc = col.require_bundle().encoder
        return {
            "model": {"path": str(enc.model_dir), "pooling": enc.pooling.mode, "tokenizer": enc.tokenizer.kind,
                      "max_length": enc.max_length},
            "device": self.settings.device, "config": config, "examples": examples, "pairs": pairs,
            "pair_threshold": pair_threshold, "eval_path": str(eval_path) if eval_path else None,
            "out_dir": str(out_dir),
        }

    def train(self, ctx: JobContext, col: Collection, spec: dict, activate: bool,
              auto: AutoWhitening | None = None) -> dict:
        """Run whitevec.models.training_worker in a child process with bounded threads; optionally activate the result
        in `col` (only there: other collections keep their models).
        The work folder is removed when the job ends, whatever the outcome."""
        work = self.settings.data_dir / "training" / ctx.id
        work.mkdir(parents=True, exist_ok=True)
        try:
            report = self._run_training(ctx, spec, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        result = {"model_dir": Path(spec["out_dir"]).name, "report": report}
        if activate:
            base = col.require_bundle()  # what was served before: the comparison's first two rows
            result["activation"] = self.activate_model(ctx, col, Path(spec["out_dir"]), auto=auto)
            if auto is not None:
                result["comparison"] = compare(auto.pairs, base, col.require_bundle())
        else:
            self._prune_models()
        return result

    def _run_training(self, ctx: JobContext, spec: dict, work: Path) -> dict:
        spec = {**spec, "config": {**spec["config"], "threads": self.settings.train_threads}}
        (work / "config.json").write_text(json.dumps(spec), encoding="utf-8")
        threads = str(self.settings.train_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        with open(work / "stderr.log", "w") as err:
            proc = subprocess.Popen([*self.training_command, str(work / "config.json")],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                    preexec_fn=die_with_parent, start_new_session=True)
            watcher = threading.Thread(target=self._stop_on_cancel, args=(ctx, proc), daemon=True)
            watcher.start()
            report, error = None, None
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    try:
                        event = json.loads(line)
                        kind = event["event"]
                    except (ValueError, KeyError, TypeError):
                        raise RuntimeError(f"the training process printed a line that is not one of its JSON "
                                           f"events ({line.strip()[:200]!r}); it was stopped") from None
                    if kind == "start":
                        ctx.progress(0, 1, phase="training", classes=event["n_classes"], texts=event["n_texts"])
                    elif kind == "step":
                        ctx.progress(event["step"], event["total"], phase="training", loss=finite(event["loss"]))
                    elif kind == "eval":
                        ctx.note(**{f"eval_{event['when']}": event["spearman"],
                                    f"hit_at_1_{event['when']}": event.get("hit_at_1")})
                    elif kind == "error":
                        error = event["error"]
                    elif kind == "done":
                        report = event["report"]
            finally:
                if proc.poll() is None and report is None:
                    proc.kill()
                rc = proc.wait()
        ctx.check_cancelled()
        if report is None:
            tail = (work / "stderr.log").read_text(errors="replace")[-500:].strip()
            raise RuntimeError(error or (f"the training process was killed by signal {-rc} (out of memory?)" if rc < 0
                                         else f"the training process exited with status {rc}: {tail}"))
        return report

    @staticmethod
    def _stop_on_cancel(ctx: JobContext, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            if ctx.cancel_event.wait(0.2):
                proc.terminate()
                return

    def activate_model(self, ctx: JobContext | None, col: Collection, model_dir: Path,
                       auto: AutoWhitening | None = None) -> dict:
        """Re-encode a collection's served corpus with a new model, refit whitening with the current
        (β, γ, dim) — or tune them on `auto`'s pairs for the new model — rebuild the index, and swap all of
        it in as one new version of that collection."""
        bundle = col.require_bundle()
        if bundle.retriever is None or bundle.pipeline.whitening is None:
            raise RuntimeError(f"collection {col.name} has no index to re-encode; build one first, then activate "
                               "the model")
        enc = bundle.encoder
        encoder = self.encoders.get(replace(col.encoder_spec(model_dir), pooling=enc.pooling.mode,
                                               tokenizer=enc.tokenizer.kind, max_length=enc.max_length))
        documents, since = col.corpus_changes.whole_documents(bundle)  # split anew by the new model's tokenizer
        return col.corpus_builds.rebuild(ctx, documents, bundle.pipeline.whitening.params, bundle.retriever.spec,
                                      encoder=encoder, since=since, auto=auto)


def compare(pairs_path: str, base: Bundle, tuned: Bundle) -> dict:
    """Spearman (×100) and paraphrase hit@1 on the pairs for: the base model raw and with the whitening it
    was served with, the fine-tuned model raw and with its tuned whitening."""
    pairs = read_pairs(pairs_path)
    n, out = len(pairs.scores), {}
    for label, bundle, whitened in (("base", base, "served whitening"), ("fine-tuned", tuned, "tuned whitening")):
        vectors = encode_unique(bundle.encoder, pairs.a + pairs.b)
        a, b = vectors[:n], vectors[n:]
        rows = {"raw": (a, b)}
        if bundle.pipeline.whitening is not None:
            rows[whitened] = (bundle.pipeline.postprocess(a), bundle.pipeline.postprocess(b))
        for what, (x, y) in rows.items():
            out[f"{label}, {what}"] = {"spearman": round(cosine_spearman(x, y, pairs.scores), 2),
                                      "hit_at_1": paraphrase_hit_at_1(pairs.a, pairs.b, pairs.scores, x, y)}
    return out
