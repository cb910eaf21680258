"""What one request is served from: a loaded version's encoder pipeline, index, documents and retriever."""

from __future__ import annotations

from dataclasses import dataclass

from whitevec.models.encoder import Encoder
from whitevec.models.engines import explain
from whitevec.models.pipeline import Pipeline

from .faiss_index import VectorIndex
from .retriever import Retriever
from .store import DocumentStore


def encoder_manifest(encoder: Encoder) -> dict:
    return {
        "path": str(encoder.model_dir),
        "max_length": encoder.max_length,
        "tokenizer": encoder.tokenizer.kind,
        "engine": encoder.engine,
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
    retriever: Retriever | None = None

    @property
    def encoder(self) -> Encoder:
        return self.pipeline.encoder

    @property
    def engine_reason(self) -> str:
        """Why the served engine runs: a version is served with the engine it was built with (or one giving
        the same vectors), whatever `auto` would pick on this machine now."""
        served = self.encoder.engine
        if self.manifest is None:
            return explain(served, self.encoder.device.type)
        built = (self.manifest.get("model") or {}).get("engine", "torch")
        why = self.manifest.get("engine_reason") or "not recorded"
        if built == served:
            return f"version {self.version} was built with {built} ({why}); a version is served with its own engine"
        return (f"version {self.version} was built with {built} ({why}); served with {served}, which gives the same "
                "vectors")

    def requested_whitening(self) -> dict:
        """The (beta, gamma, dim) the version was asked for: dim as asked, not as a rank-deficient fit
        lowered it for gamma > 0 ({} for versions from before it was recorded)."""
        return dict((self.manifest or {}).get("whitening", {}).get("requested") or {})

    def close(self) -> None:
        """Free the index and close its files (the encoder is shared with other bundles and stays)."""
        if self.retriever is not None:
            self.retriever.close()
        elif self.index is not None:
            self.index.close()
