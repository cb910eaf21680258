"""Where a version's index lives: the `IndexTarget` protocol every backend implements, and `FilesTarget`,
FAISS files beside the version's other parts.

The version store, the build and the loader call a target and never ask which backend it is: building an
index, opening it, the switch activation moves (none for files; the alias replicas share on Milvus), and
what must be dropped outside the version folder when a version or a collection goes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import Whitening

from . import analyzer
from .bundle import Bundle
from .changes import CHANGED_FILE, CHANGES_FILE, HEAD_FILE, ChangeLog
from .faiss_index import VectorIndex
from .lexical import BM25, LexicalIndex, Postings
from .parts import DOCS_FILE, INDEX_FILE, LEXICAL_FILE, RAW_FILE, VersionDamaged
from .retriever import FaissRetriever
from .spec import IndexSpec
from .store import Documents, DocumentStore

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BuiltIndex:
    """What a target built: the index spec (parameters resolved), its dim, the documents it holds, and the
    lexical index's manifest section (None where the target keeps none)."""

    spec: IndexSpec
    dim: int
    count: int
    lexical: dict | None


class IndexTarget(Protocol):
    """One backend's way of keeping a version's index."""

    #: The name a manifest records (`"backend"`); a version is opened by the target of that name.
    backend: str
    #: Replicas share a switch (which version is served) that another process may move.
    followable: bool

    def build(self, version: str, tmp: Path, documents: Documents, raw: np.ndarray, spec: IndexSpec,
              transform: Transform, bm25: BM25) -> BuiltIndex:
        """Index a new version being written in `tmp` (dense, and lexical where the target keeps one)."""

    def open(self, version: str, folder: Path, manifest: dict, pipeline: Pipeline, use_gpu: bool,
             device: str | None) -> Bundle:
        """A committed version's index and documents, checked against its manifest, as a served Bundle."""

    def report(self, folder: Path, manifest: dict) -> dict:
        """Its changes since the build and its live count, read without loading it (or `damaged`)."""

    def point(self, folder: Path) -> None:
        """Activation: move the shared switch to this version (before ACTIVE is written)."""

    def switched_to(self, versions: Sequence[tuple[str, Path]]) -> str | None:
        """Which of `versions` (id, folder; newest first) the shared switch names; None without a switch."""

    def discard(self, version: str) -> None:
        """What a build of `version` that never committed left outside its temp folder."""

    def drop(self, folder: Path) -> None:
        """What a committed version keeps outside its folder, before the folder is removed."""

    def drop_all(self, root: Path) -> None:
        """Everything a deleted collection's versions (in `root`) keep outside their folders."""


class FilesTarget:
    """FAISS: the index, the documents and the raw vectors are files of the version folder, changed only
    through its change log; nothing lives outside the folder and there is no shared switch."""

    backend = "faiss"
    followable = False

    def build(self, version: str, tmp: Path, documents: Documents, raw: np.ndarray, spec: IndexSpec,
              transform: Transform, bm25: BM25) -> BuiltIndex:
        index = VectorIndex.build(transform(raw), spec, use_gpu=False)
        try:
            np.save(tmp / RAW_FILE, np.ascontiguousarray(raw, dtype=np.float32))
            index.save(tmp / INDEX_FILE)
        finally:
            index.close()  # built for writing: the server loads its own copy at activation
        count = DocumentStore.write(tmp / DOCS_FILE, documents)
        Postings.build(d.text for d in documents).save(tmp / LEXICAL_FILE)
        return BuiltIndex(index.spec, index.dim, count, {"analyzer": analyzer.describe(), "bm25": bm25.to_dict()})

    def open(self, version: str, folder: Path, manifest: dict, pipeline: Pipeline, use_gpu: bool,
             device: str | None) -> Bundle:
        index: VectorIndex | None = None
        try:
            spec = IndexSpec(**manifest["index"]["spec"])
            index = VectorIndex.load(folder / INDEX_FILE, spec, use_gpu=use_gpu, device=device)
            store = DocumentStore(folder / DOCS_FILE)
        except (RuntimeError, OSError, ValueError, KeyError, sqlite3.Error) as exc:
            if index is not None:  # a load that fails halfway frees what it loaded
                index.close()
            raise VersionDamaged(f"version {version} could not be loaded: {exc}") from exc
        check_consistent(version, manifest, pipeline.whitening, index, store)
        try:
            lexical = self._lexical(folder, manifest, index.count)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            store.close()
            index.close()
            raise VersionDamaged(f"version {version}: {LEXICAL_FILE} (its lexical index) is unreadable ({exc}); "
                                 "rebuild it, or restore the version from a backup") from exc
        try:
            changes = ChangeLog(folder / CHANGES_FILE, index.count, pipeline.encoder.dim)
            retriever = FaissRetriever(index, store, changes, pipeline.postprocess, folder / RAW_FILE, lexical)
        except (sqlite3.Error, ValueError, IndexError) as exc:
            store.close()
            index.close()
            raise VersionDamaged(f"version {version}: {CHANGES_FILE} (its upserts and deletes) is unreadable ({exc}); "
                                 f"its files are left as found; restore them from a backup (`whitevec backup`), or "
                                 f"move {CHANGES_FILE}*, {HEAD_FILE} and {CHANGED_FILE} away to serve the version as "
                                 "built, without those changes") from exc
        return Bundle(pipeline, version, manifest, index, store, retriever)

    @staticmethod
    def _lexical(folder: Path, manifest: dict, count: int) -> LexicalIndex | None:
        """The version's lexical index; None for a version built before them, or by another analyzer (its
        tokens would not meet the queries': searching it lexically asks for a rebuild)."""
        section = manifest.get("lexical")
        if section is None or section.get("analyzer") != analyzer.describe():
            return None
        postings = Postings.load(folder / LEXICAL_FILE)
        if postings.count != count:
            raise ValueError(f"it holds {postings.count} documents, the index {count}")
        return LexicalIndex(postings, BM25(**section["bm25"]))

    def report(self, folder: Path, manifest: dict) -> dict:
        built = manifest.get("documents", {}).get("count") or 0
        path = folder / CHANGES_FILE
        if not path.is_file():
            return {"added": 0, "gone": 0, "live_documents": built}
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                added = conn.execute("SELECT COUNT(*) FROM added WHERE live = 1").fetchone()[0]
                gone = conn.execute("SELECT COUNT(*) FROM gone").fetchone()[0]
        except sqlite3.Error as exc:
            return {"damaged": f"{CHANGES_FILE} is unreadable: {exc}"}
        return {"added": added, "gone": gone, "live_documents": built - gone + added}

    def point(self, folder: Path) -> None:
        """No switch but ACTIVE, which the version store writes."""

    def switched_to(self, versions: Sequence[tuple[str, Path]]) -> str | None:
        return None

    def discard(self, version: str) -> None:
        """A build's files are all in its temp folder, which the store removes."""

    def drop(self, folder: Path) -> None:
        """Everything is in the folder."""

    def drop_all(self, root: Path) -> None:
        """Everything is in the folders."""


#: The one FAISS target: a process on the Milvus backend still opens versions built on files with it.
FILES = FilesTarget()


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
