"""Versioned serving bundles: model + whitening + FAISS index + documents, one folder each.

    data_dir/versions/<version>/manifest.json   ids and parameters of every part
                               /whitening.npz
                               /index.faiss
                               /docs.sqlite
    data_dir/versions/ACTIVE                    {"version": "<version>"}

A version is written under `.tmp-<version>`, fsynced, renamed into place, and only
then named by ACTIVE, which is replaced atomically (temp file, fsync, os.replace).
A crash at any moment therefore leaves the previous version active and whole.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from whitevec.models.encoder import Encoder
from whitevec.models.errors import ModelFolderError, WhitevecError
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import Whitening

from .faiss_index import IndexSpec, VectorIndex
from .store import DocumentStore

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
POINTER = "ACTIVE"
WHITENING_FILE = "whitening.npz"
INDEX_FILE = "index.faiss"
DOCS_FILE = "docs.sqlite"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def encoder_manifest(encoder: Encoder) -> dict:
    return {
        "path": str(encoder.model_dir),
        "max_length": encoder.max_length,
        "tokenizer": encoder.tokenizer.kind,
        **encoder.identity.to_dict(),
    }


@dataclass
class Bundle:
    """What one request is served from: a consistent snapshot, swapped as a whole."""

    pipeline: Pipeline
    version: str | None = None
    manifest: dict | None = None
    index: VectorIndex | None = None
    store: DocumentStore | None = None

    @property
    def encoder(self) -> Encoder:
        return self.pipeline.encoder


class VersionStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "versions"
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def active(self) -> str | None:
        if not self.pointer.is_file():
            return None
        return json.loads(self.pointer.read_text(encoding="utf-8"))["version"]

    def folder(self, version: str) -> Path:
        return self.root / version

    def versions(self) -> list[str]:
        """Complete versions, oldest first (ids start with a UTC timestamp to the microsecond)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()
                      and not p.name.startswith("."))

    def new_version(self) -> tuple[str, Path]:
        now = time.time()
        version = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{int(now % 1 * 1e6):06d}-{secrets.token_hex(2)}"
        tmp = self.root / f".tmp-{version}"
        tmp.mkdir()
        return version, tmp

    def commit(self, version: str, tmp: Path, manifest: dict) -> Path:
        """Make a fully written temp folder a version (manifest last, then one rename)."""
        for name in os.listdir(tmp):
            fsync_path(tmp / name)
        write_json_atomic(tmp / MANIFEST, manifest)
        final = self.folder(version)
        os.rename(tmp, final)
        fsync_path(self.root)
        return final

    def activate(self, version: str) -> None:
        if not (self.folder(version) / MANIFEST).is_file():
            raise WhitevecError(f"version {version} is not complete; refusing to activate it")
        write_json_atomic(self.pointer, {"version": version, "activated_at": time.time()})

    def manifest(self, version: str) -> dict:
        return json.loads((self.folder(version) / MANIFEST).read_text(encoding="utf-8"))

    def cleanup_partial(self) -> None:
        """Remove what a crashed rebuild left behind; complete versions are untouched."""
        for path in self.root.iterdir():
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` versions; never the active one."""
        active = self.active()
        old = [v for v in self.versions() if v != active]
        doomed = old[: max(0, len(old) - max(keep - 1, 0))]
        for version in doomed:
            shutil.rmtree(self.folder(version), ignore_errors=True)
        return doomed

    def load(self, version: str, encoder: Encoder | None = None, device: str | None = None,
             use_gpu: bool = True) -> Bundle:
        """Load a version; reuses `encoder` when it is the manifest's model, else loads that model."""
        manifest = self.manifest(version)
        model = manifest["model"]
        same = encoder is not None and encoder_manifest(encoder) == model
        if not same:
            encoder = Encoder(model["path"], pooling=model["pooling"], tokenizer=model["tokenizer"],
                              max_length=model["max_length"], device=device)
            if encoder.identity.fingerprint != model["fingerprint"]:
                raise ModelFolderError(
                    f"model folder {model['path']} changed since version {version} was built "
                    f"(weights {encoder.identity.fingerprint}, expected {model['fingerprint']}): "
                    "rebuild the index with the current model"
                )
        folder = self.folder(version)
        whitening = Whitening.load(folder / WHITENING_FILE)
        pipeline = Pipeline(encoder, whitening)
        spec = IndexSpec(**manifest["index"]["spec"])
        index = VectorIndex.load(folder / INDEX_FILE, spec, use_gpu=use_gpu)
        return Bundle(pipeline, version, manifest, index, DocumentStore(folder / DOCS_FILE))
