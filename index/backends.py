"""The index backend a process opens once: version stores for its collections, and the client it closes."""

from __future__ import annotations

from pathlib import Path

from whitevec.models.encoder import EncoderPool
from whitevec.models.errors import WhitevecError

from .milvus_target import MilvusTarget, alias_name
from .target import FILES
from .versions import VersionStore

BACKENDS = ("faiss", "milvus")


class IndexBackend:
    """Where versions keep their indexes (WHITEVEC_INDEX_BACKEND): FAISS files beside each version, or a
    Milvus server whose per-collection aliases replicas share. The service asks it for stores and never
    learns which one runs; whoever opens it closes it (a Milvus Lite file opens in one process at a time)."""

    def __init__(self, kind: str, data_root: Path, uri: str | None = None, alias_prefix: str = "whitevec",
                 shared: bool = False) -> None:
        """`shared`: the bundle dir is shared between replicas (WHITEVEC_BUNDLE_DIR), which only a backend
        with a shared switch can serve. `uri`: the Milvus server or Milvus Lite file (default: milvus.db in
        the bundle dir)."""
        if kind not in BACKENDS:
            raise WhitevecError(f"index backend {kind!r}: give one of {', '.join(BACKENDS)}")
        if shared and kind != "milvus":
            raise WhitevecError("WHITEVEC_BUNDLE_DIR shares versions between replicas on the Milvus backend; FAISS "
                                "replicas never follow each other (each would serve and change its own copy of the "
                                "shared versions): unset it, or set WHITEVEC_INDEX_BACKEND=milvus")
        self.kind = kind
        self.shared = shared
        self._uri = uri or str(Path(data_root).resolve() / "milvus.db")
        self._alias_prefix = alias_prefix
        self._client = None

    def open(self) -> None:
        """Connect (Milvus; nothing to do for FAISS). After the bundle dir exists: Milvus Lite writes its
        file there."""
        if self.kind != "milvus" or self._client is not None:
            return
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise WhitevecError("WHITEVEC_INDEX_BACKEND=milvus needs pymilvus (and milvus-lite for a file URI): "
                                "pip install 'whitevec[milvus]'") from exc
        self._client = MilvusClient(self._uri)

    def store(self, folder: Path, collection: str, encoders: EncoderPool | None = None) -> VersionStore:
        """The version store of whitevec collection `collection`, kept in `folder` (after `open`)."""
        target = (MilvusTarget(self._client, alias_name(self._alias_prefix, collection), collection)
                  if self._client is not None else FILES)
        return VersionStore(folder, target, shared=self.shared, encoders=encoders)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
