"""The training job's child process: one training from a job's config file, JSON events on stdout.

The server runs it as `python -m whitevec.models.training_worker CONFIG` so a training never shares
the server's process (its memory and threads end with it)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

from .training import TrainConfig, classes_from_examples, classes_from_pairs, train


def worker_main(config_path: str) -> int:
    """Run one training from a job's config file; JSON lines on stdout, the last one `done` or `error`."""
    from .encoder import EncoderSpec

    spec = json.loads(Path(config_path).read_text(encoding="utf-8"))

    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)

    try:
        config = TrainConfig(**spec["config"])
        if config.threads:
            torch.set_num_threads(config.threads)
        model = spec["model"]
        encoder = EncoderSpec.from_manifest({**model, "engine": "torch"}, device=spec.get("device")).build()
        data = (classes_from_examples(spec["examples"]) if spec.get("examples") is not None
                else classes_from_pairs(spec["pairs"], spec["pair_threshold"]))
        emit({"event": "start", "n_texts": len(data.texts), "n_classes": data.n_classes})
        eval_path = Path(spec["eval_path"]) if spec.get("eval_path") else None
        report = train(encoder, data, config, Path(spec["out_dir"]), eval_path, on_event=emit)
    except Exception as exc:  # reported to the job as its reason
        emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({"event": "done", "report": {**report, "loss": thinned(report["loss"])}})
    return 0


def finite(value: float) -> float | None:
    """A loss as JSON can carry it: rounded, None where training diverged (NaN, ±inf)."""
    return round(value, 5) if math.isfinite(value) else None


def thinned(loss: list[float], most: int = 1000) -> list[list[float | None]]:
    """[step, loss] pairs for a job's record: every step up to `most`, else the mean of each run of
    steps (the curve's shape, in a bounded record); None where the loss was not finite."""
    if len(loss) <= most:
        return [[i + 1, finite(v)] for i, v in enumerate(loss)]
    width = -(-len(loss) // most)
    return [[min(i + width, len(loss)), finite(float(np.mean(loss[i : i + width])))]
            for i in range(0, len(loss), width)]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(worker_main(sys.argv[1]))
