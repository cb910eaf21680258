"""Re-encoding a corpus on a Ray cluster (`whitevec index build FILE --ray ADDRESS`).

Encoding is the slow part of a rebuild, and it is embarrassingly parallel: Ray Data reads the JSONL on
the cluster, a pool of encoder actors (one per GPU, else one per CPU with one torch thread each)
turns the texts into pooled vectors with the version's model, and the driver gathers the raw vectors
by document id. Whitening needs every vector before it can be fitted, so the fit and the write into
the index (the Milvus collection, or FAISS) then run once, in the driver, exactly as in-process:
both paths build the same version.

The JSONL file and the model folder must be readable at the same paths on every Ray node (one
machine, or a shared filesystem); each actor checks the model's weights fingerprint before encoding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from whitevec.models.encoder import Encoder, EncoderSpec
from whitevec.models.errors import WhitevecError

from .documents import parse_document
from .store import Document

log = logging.getLogger(__name__)

#: Lines per Ray Data batch handed to one encoder actor.
RAY_BATCH = 256


class EncodeBatch:
    """A Ray Data actor: one model per actor, loaded once, then batches of JSONL lines → (id, vector)."""

    def __init__(self, model: dict, threads: int, device: str) -> None:
        import torch

        torch.set_num_threads(threads)
        self.encoder = EncoderSpec.from_manifest(model, device=device).build()
        if self.encoder.identity.fingerprint != model["fingerprint"]:
            raise WhitevecError(f"model folder {model['path']} on this Ray node has weights "
                                f"{self.encoder.identity.fingerprint}, the driver's have {model['fingerprint']}: "
                                "give every node the same model folder")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        docs = [parse_document(json.loads(line), "ray") for line in batch["text"] if line.strip()]
        vectors = self.encoder.encode([d.text for d in docs]).vectors
        return {"id": np.array([d.id for d in docs], dtype=object), "vector": vectors}


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise WhitevecError("--ray needs Ray Data: pip install 'whitevec[ray]'") from exc
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Ray started (address "local") or joined for the block, shut down after. Enter it before anything
    opens gRPC channels (pymilvus does): Ray forks its local servers, and a fork beside live gRPC
    threads can leave the child hung before it starts."""
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own errors here
        ray.shutdown()
        raise WhitevecError(f"could not start or reach Ray at {address!r}: {exc} "
                            "(give 'local', 'auto' for a running `ray start`, or ray://HOST:10001)") from exc
    try:
        yield
    finally:
        ray.shutdown()


def ray_encode(path: Path, documents: list[Document], encoder: Encoder, address: str, workers: int | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """The pooled vectors of `documents` (read from `path`), in their order, encoded on the Ray cluster at
    `address` ("local" starts one on this machine; "auto" joins the one running here; ray://host:10001),
    or on the one a surrounding `ray_session` opened."""
    from whitevec.index.bundle import encoder_manifest

    ray = _ray()
    with ray_session(address):
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False  # the CLI shows its own
            resources = ray.cluster_resources()
            gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
            use_gpu = gpus > 0 and encoder.device.type == "cuda"
            workers = workers or (gpus if use_gpu else cpus)
            threads = 1 if use_gpu else max(1, cpus // workers)
            log.info("encoding %d documents on Ray (%s): %d %s workers", len(documents), address, workers,
                     "GPU" if use_gpu else f"CPU ({threads} threads)")
            # the read holds no CPU: the encoder actors hold them all, and a read waiting for one would never run
            dataset = ray.data.read_text(str(Path(path).resolve()), num_cpus=0).map_batches(
                EncodeBatch, batch_size=RAY_BATCH, concurrency=workers,
                fn_constructor_kwargs={"model": encoder_manifest(encoder), "threads": threads,
                                       "device": "cuda" if use_gpu else "cpu"},
                num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else threads)
            row = {doc.id: i for i, doc in enumerate(documents)}
            out = np.zeros((len(documents), encoder.dim), dtype=np.float32)
            seen = np.zeros(len(documents), dtype=bool)
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                idx = np.fromiter((row[str(i)] for i in batch["id"]), dtype=np.int64, count=len(batch["id"]))
                out[idx] = batch["vector"]
                seen[idx] = True
                if on_progress is not None:
                    on_progress(int(seen.sum()), len(documents))
        except ray.exceptions.RayError as exc:
            raise WhitevecError(f"the Ray encode failed: {exc}") from exc
    if not seen.all():
        missing = [documents[i].id for i in np.flatnonzero(~seen)[:5]]
        raise WhitevecError(f"Ray returned no vector for {int((~seen).sum())} documents (e.g. {missing}): "
                            f"is {path} the same file on every node?")
    return out
