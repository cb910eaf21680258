"""Milvus as an `IndexTarget`: one Milvus collection per whitevec version, named here; the alias every
replica follows, moved at activation (`alter_alias`: every reader flips at once); and the collections and
alias dropped when a version or a whole collection goes."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whitevec.models.files import write_json_atomic
from whitevec.models.pipeline import Pipeline

from . import analyzer
from .bundle import Bundle
from .journal import JOURNAL_FILE, Journal
from .lexical import BM25
from .milvus import MilvusRetriever
from .milvus_fields import TERMS_FORM
from .parts import MILVUS_FILE, VersionDamaged
from .spec import IndexSpec
from .store import Documents
from .target import BuiltIndex


def milvus_safe(name: str) -> str:
    """A whitevec name as Milvus allows it (letters, digits, underscores); a name that had a '-' gets a
    short digest, so `a-b` and `a_b` never meet."""
    safe = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return safe if safe == name else f"{safe}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def collection_name(version: str, collection: str | None = None) -> str:
    """The Milvus collection of a whitevec version: `whitevec_<collection>_<version>`; without a
    collection, the name versions had before collections (`wv_<version>`)."""
    if collection is None:
        return "wv_" + re.sub(r"[^0-9A-Za-z_]", "_", version)
    return f"whitevec_{milvus_safe(collection)}_{re.sub(r'[^0-9A-Za-z_]', '_', version)}"


def alias_name(prefix: str, collection: str) -> str:
    """The alias naming a collection's served version: WHITEVEC_MILVUS_ALIAS for `default` (as before
    collections), `<alias>_<collection>` for the others."""
    return prefix if collection == "default" else f"{prefix}_{milvus_safe(collection)}"



@dataclass
class MilvusTarget:
    """Where a collection's versions keep their index on the Milvus backend: a pymilvus client (shared by
    every collection of the process), the collection's alias that every replica follows, and the whitevec
    collection whose name its Milvus collections carry."""

    client: object
    alias: str = "whitevec"
    collection: str | None = None

    backend = "milvus"
    followable = True  # every replica reads the alias

    def collection_name(self, version: str) -> str:
        return collection_name(version, self.collection)

    @staticmethod
    def index_of(folder: Path) -> str | None:
        """The Milvus collection a version folder records (None for a version built on files)."""
        path = folder / MILVUS_FILE
        return json.loads(path.read_text(encoding="utf-8"))["collection"] if path.is_file() else None

    def build(self, version: str, tmp: Path, documents: Documents, raw: np.ndarray, spec: IndexSpec,
              transform: Callable[[np.ndarray], np.ndarray], bm25: BM25) -> BuiltIndex:
        """The collection, with Milvus's BM25 function over whitevec's words (milvus.py) for lexical search."""
        collection = self.collection_name(version)
        retriever = MilvusRetriever.create(self.client, collection, documents, raw, spec, transform, bm25)
        try:
            write_json_atomic(tmp / MILVUS_FILE, {"collection": collection})
            return BuiltIndex(retriever.spec, retriever.dim, len(documents),
                              {"analyzer": analyzer.describe(), "bm25": bm25.to_dict(), "terms": TERMS_FORM})
        finally:
            retriever.close()  # built for writing: the server opens its own at activation

    def open(self, version: str, folder: Path, manifest: dict, pipeline: Pipeline, use_gpu: bool,
             device: str | None) -> Bundle:
        try:
            name = self.index_of(folder)
            if name is None or not self.client.has_collection(name):
                raise VersionDamaged(f"version {version}: Milvus collection {name} is missing")
            lexical = manifest.get("lexical")  # a version built before lexical search has no terms field
            retriever = MilvusRetriever(self.client, name, IndexSpec(**manifest["index"]["spec"]),
                                        manifest["index"]["dim"], pipeline.encoder.dim, pipeline.postprocess,
                                        Journal(folder / JOURNAL_FILE), terms=lexical is not None,
                                        searchable=lexical is not None and lexical.get("terms") == TERMS_FORM
                                        and lexical.get("analyzer") == analyzer.describe(),
                                        unserved=lambda: alias_target(self.client, self.alias) not in (name, None))
        except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
            raise VersionDamaged(f"version {version} could not be loaded: {exc}") from exc
        return Bundle(pipeline, version, manifest, None, None, retriever)

    def report(self, folder: Path, manifest: dict) -> dict:
        """Changed in place in its collection (Milvus compacts it): the live count only."""
        try:
            name = self.index_of(folder)
        except (OSError, ValueError, KeyError) as exc:
            return {"damaged": f"{MILVUS_FILE} is unreadable: {exc}"}
        if name is None or not self.client.has_collection(name):
            return {"damaged": f"Milvus collection {name} is not reachable with WHITEVEC_MILVUS_URI"}
        found = self.client.query(name, filter="", output_fields=["count(*)"])
        return {"live_documents": int(found[0]["count(*)"])}

    def point(self, folder: Path) -> None:
        name = self.index_of(folder)
        if name is not None:
            point_alias(self.client, self.alias, name)  # every replica flips with it

    def switched_to(self, versions: Sequence[tuple[str, Path]]) -> str | None:
        """VersionDamaged when the alias names an index none of `versions` describes (replicas with
        different bundle dirs)."""
        target = alias_target(self.client, self.alias)
        if target is None:
            return None
        for version, folder in versions:
            try:
                if self.index_of(folder) == target:
                    return version
            except (OSError, ValueError, KeyError):
                continue
        raise VersionDamaged(f"the Milvus alias {self.alias} names collection {target}, which no version in this "
                             "bundle dir describes: give every replica the same WHITEVEC_BUNDLE_DIR")

    def discard(self, version: str) -> None:
        """A build that died may have left its collection half-written (named as before collections, in a
        data dir upgraded since, or as now)."""
        for name in (collection_name(version), self.collection_name(version)):
            self._drop_collection(name)

    def drop(self, folder: Path) -> None:
        try:
            self._drop_collection(self.index_of(folder))
        except (OSError, ValueError, KeyError):
            return

    def drop_all(self, root: Path) -> None:
        """The alias first (Milvus keeps a collection an alias names), when it is still this collection's
        and not a newer one's of the same name; then every version's collection and any half-written one."""
        mine = {self.index_of(p) for p in root.iterdir() if (p / MILVUS_FILE).is_file()}
        if alias_target(self.client, self.alias) in mine:
            drop_alias(self.client, self.alias)
        for path in root.iterdir():
            if path.name.startswith(".tmp-"):
                self.discard(path.name[len(".tmp-"):])
            elif path.is_dir():
                self.drop(path)

    def _drop_collection(self, name: str | None) -> None:
        if name is not None and self.client.has_collection(name):
            self.client.drop_collection(name)


def point_alias(client, alias: str, collection: str) -> None:
    """Make `alias` name `collection`, atomically for every reader."""
    if alias in client.list_aliases(collection_name=collection).get("aliases", []):
        return
    try:
        client.alter_alias(collection, alias)
    except Exception:  # noqa: BLE001 - pymilvus raises MilvusException when the alias does not exist yet
        client.create_alias(collection, alias)


def drop_alias(client, alias: str) -> None:
    """Remove `alias` if it exists (a deleted collection's)."""
    if alias_target(client, alias) is not None:
        client.drop_alias(alias)


def alias_target(client, alias: str) -> str | None:
    try:
        return client.describe_alias(alias)["collection_name"]
    except Exception:  # noqa: BLE001 - no such alias
        return None
