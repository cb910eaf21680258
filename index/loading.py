"""Loading one stored version as a served Bundle: its model (reused when it is the same), whitening,
index, documents and change log, each checked against the manifest and against each other."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Protocol

from whitevec.models.encoder import Encoder, EncoderPool, EncoderSpec, resolve_engine
from whitevec.models.engines import REFERENCE, serving_engine
from whitevec.models.errors import ModelFolderError
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import Whitening

from .bundle import Bundle, encoder_manifest, resolve_model_ref
from .changes import CHANGED_FILE, CHANGES_FILE, HEAD_FILE, ChangeLog
from .faiss_index import VectorIndex
from .spec import IndexSpec
from .journal import JOURNAL_FILE, Journal
from .milvus import MilvusRetriever, MilvusTarget
from .parts import DOCS_FILE, INDEX_FILE, MANIFEST, RAW_FILE, WHITENING_FILE, VersionDamaged
from .retriever import FaissRetriever
from .store import DocumentStore

log = logging.getLogger(__name__)


class StoredVersions(Protocol):
    """What loading reads of a version store (index.versions.VersionStore, which loads through here)."""

    encoders: EncoderPool | None
    milvus: MilvusTarget | None

    @property
    def models_root(self) -> Path: ...

    def folder(self, version: str) -> Path: ...

    def manifest(self, version: str) -> dict: ...

    def verify_files(self, version: str) -> dict: ...

    def model_section(self, version: str, manifest: dict) -> dict: ...

    def collection(self, version: str) -> str | None: ...


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
    folder = store.folder(version)
    if manifest.get("backend") == "milvus":
        return _load_milvus(store, version, manifest, encoder)
    index: VectorIndex | None = None
    try:
        whitening = Whitening.load(folder / WHITENING_FILE)
        pipeline = Pipeline(encoder, whitening)
        spec = IndexSpec(**manifest["index"]["spec"])
        index = VectorIndex.load(folder / INDEX_FILE, spec, use_gpu=use_gpu, device=device)
        store = DocumentStore(folder / DOCS_FILE)
    except (RuntimeError, OSError, ValueError, KeyError, sqlite3.Error) as exc:
        if index is not None:  # a load that fails halfway frees what it loaded
            index.close()
        raise VersionDamaged(f"version {version} could not be loaded: {exc}") from exc
    check_consistent(version, manifest, whitening, index, store)
    try:
        changes = ChangeLog(folder / CHANGES_FILE, index.count, encoder.dim)
        retriever = FaissRetriever(index, store, changes, pipeline.postprocess, folder / RAW_FILE)
    except (sqlite3.Error, ValueError, IndexError) as exc:
        store.close()
        index.close()
        raise VersionDamaged(f"version {version}: {CHANGES_FILE} (its upserts and deletes) is unreadable ({exc}); "
                             f"its files are left as found; restore them from a backup (`whitevec backup`), or move "
                             f"{CHANGES_FILE}*, {HEAD_FILE} and {CHANGED_FILE} away to serve the version as built, "
                             "without those changes") from exc
    return Bundle(pipeline, version, manifest, index, store, retriever)


def _load_milvus(store: StoredVersions, version: str, manifest: dict, encoder: Encoder) -> Bundle:
    if store.milvus is None:
        raise VersionDamaged(f"version {version} keeps its index in Milvus: set WHITEVEC_INDEX_BACKEND=milvus "
                             "and WHITEVEC_MILVUS_URI to serve it")
    name = store.collection(version)
    try:
        whitening = Whitening.load(store.folder(version) / WHITENING_FILE)
        pipeline = Pipeline(encoder, whitening)
        if not store.milvus.client.has_collection(name):
            raise VersionDamaged(f"version {version}: Milvus collection {name} is missing")
        retriever = MilvusRetriever(store.milvus.client, name, IndexSpec(**manifest["index"]["spec"]),
                                    manifest["index"]["dim"], encoder.dim, pipeline.postprocess,
                                    Journal(store.folder(version) / JOURNAL_FILE))
    except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
        raise VersionDamaged(f"version {version} could not be loaded: {exc}") from exc
    return Bundle(pipeline, version, manifest, None, None, retriever)


def check_consistent(version: str, manifest: dict, whitening: Whitening, index: VectorIndex,
                      store: DocumentStore) -> None:
    """The loaded parts agree with the manifest and with each other."""
    problems = []
    count = manifest["index"]["count"]
    if index.count != count:
        problems.append(f"index.faiss holds {index.count} vectors, the manifest says {count}")
    try:
        docs = store.count()
    except sqlite3.Error as exc:
        docs = None
        problems.append(f"docs.sqlite is unreadable ({exc})")
    if docs is not None and docs != count:
        problems.append(f"docs.sqlite holds {docs} documents, the manifest says {count}")
    if index.dim != manifest["index"]["dim"] or index.dim != manifest["whitening"]["output_dim"]:
        problems.append(f"index.faiss has {index.dim} dims, the manifest says {manifest['index']['dim']}")
    if whitening.version != manifest["whitening"]["version"]:
        problems.append(f"whitening.npz is fit {whitening.version}, the manifest says {manifest['whitening']['version']}")
    if problems:
        store.close()
        index.close()
        raise VersionDamaged(f"version {version} is inconsistent: " + "; ".join(problems))
