"""What one request is served from: a loaded version's encoder pipeline, index, documents and retriever."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from whitevec.models.encoder import Encoder
from whitevec.models.engines import explain
from whitevec.models.loader import bundled_model_dir
from whitevec.models.pipeline import Pipeline

from .faiss_index import VectorIndex
from .passage_rows import Layout, layout_for, setting_of
from .retriever import Retriever
from .store import DocumentStore


def model_ref(model_dir: Path, models_root: Path) -> str:
    """How a version names its model so that its data dir can move (another path, venv or machine):
    `bundled`, `models/<name>` for a fine-tune in the data dir, else the folder's absolute path (a user's own
    model folder, which must be at that path wherever the data dir goes)."""
    path = Path(model_dir).resolve()
    if path == bundled_model_dir().resolve():
        return "bundled"
    if path.parent == Path(models_root).resolve():
        return f"models/{path.name}"
    return str(path)


def resolve_model_ref(model: dict, models_root: Path) -> Path:
    """The folder a manifest's model section names on this machine (`ref` first, else its old `path`)."""
    ref = model.get("ref")
    if ref == "bundled":
        return bundled_model_dir().resolve()
    if isinstance(ref, str) and ref.startswith("models/"):
        return Path(models_root) / ref[len("models/"):]
    return Path(ref or model["path"])


def encoder_manifest(encoder: Encoder) -> dict:
    """The model section of a manifest (a version's manifest adds `ref`, see model_ref)."""
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
    _layout: Layout | None = field(default=None, init=False, repr=False)

    @property
    def layout(self) -> Layout:
        """How the version's rows hold its documents (whole, or passages split by the served tokenizer)."""
        if self._layout is None:
            built = ((self.manifest or {}).get("passages") or {}).get("documents")
            self._layout = layout_for(setting_of(self.manifest), self.encoder.tokenizer, built)
        return self._layout

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
