"""Loading one stored version as a served Bundle: its model (reused when it is the same) and whitening here,
its index and documents by the target of the backend it was built on, each checked against the manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from whitevec.models.encoder import Encoder, EncoderPool, EncoderSpec, resolve_engine
from whitevec.models.engines import REFERENCE, serving_engine
from whitevec.models.errors import ModelFolderError
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import Whitening

from .bundle import Bundle, encoder_manifest, resolve_model_ref
from .parts import MANIFEST, WHITENING_FILE, VersionDamaged
from .target import IndexTarget

log = logging.getLogger(__name__)


class StoredVersions(Protocol):
    """What loading reads of a version store (index.versions.VersionStore, which loads through here)."""

    encoders: EncoderPool | None

    @property
    def models_root(self) -> Path: ...

    def folder(self, version: str) -> Path: ...

    def manifest(self, version: str) -> dict: ...

    def verify_files(self, version: str) -> dict: ...

    def model_section(self, version: str, manifest: dict) -> dict: ...

    def target_for(self, backend: str) -> IndexTarget: ...


def load_version(store: StoredVersions, version: str, encoder: Encoder | None = None, device: str | None = None,
                 use_gpu: bool = True, engine: str | None = None, engine_cache: Path | None = None,
                 checksums: bool = True) -> Bundle:
    """Load a verified version; reuses `encoder` when it is the manifest's model, else loads that model.

    `checksums=False` skips re-hashing the parts (the consistency checks still run): only for a version
    this process has just written, whose checksums were computed from the files on disk moments ago.

    The version is served with the engine it was built with, or with `engine` when that one gives
    the same vectors (torch and onnx fp32); never with one that gives other vectors."""
    if not (store.folder(version) / MANIFEST).is_file():
        raise VersionDamaged(f"version {version} has no folder with a manifest in versions/")
    manifest = store.verify_files(version) if checksums else store.manifest(version)
    model = {"engine": REFERENCE, **store.model_section(version, manifest)}  # versions from before engines
    path = resolve_model_ref(model, store.models_root)
    wanted = resolve_engine(engine, device) if engine is not None else None
    use = serving_engine(model["engine"], wanted)
    if wanted is not None and use != wanted:
        log.warning("version %s was encoded with engine %s; serving it with %s, not %s (their vectors "
                    "differ): rebuild it to change engines", version, use, use, wanted)
    recorded = {key: value for key, value in model.items() if key != "ref"} | {"path": str(path.resolve()),
                                                                                  "engine": use}
    same = encoder is not None and encoder_manifest(encoder) == recorded
    if not same:
        spec = EncoderSpec.from_manifest(recorded, device=device, engine_cache=engine_cache)
        encoder = store.encoders.get(spec) if store.encoders is not None else spec.build()
        if encoder.identity.fingerprint != model["fingerprint"]:
            raise ModelFolderError(
                f"model folder {path} changed since version {version} was built "
                f"(weights {encoder.identity.fingerprint}, expected {model['fingerprint']}): "
                "rebuild the index with the current model"
            )
    target = store.target_for(manifest.get("backend", "faiss"))
    folder = store.folder(version)
    try:
        pipeline = Pipeline(encoder, Whitening.load(folder / WHITENING_FILE))
    except (OSError, ValueError, KeyError) as exc:
        raise VersionDamaged(f"version {version} could not be loaded: {exc}") from exc
    return target.open(version, folder, manifest, pipeline, use_gpu=use_gpu, device=device)
