"""Building a new version from documents: encode, fit whitening, index, write, commit."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from whitevec.models.encoder import Encoder
from whitevec.models.pipeline import l2_normalize
from whitevec.models.whitening import Whitening, WhiteningParams, jl_dim

from .faiss_index import IndexSpec, VectorIndex
from .store import DocumentStore, Document
from .versions import DOCS_FILE, INDEX_FILE, WHITENING_FILE, VersionStore, encoder_manifest

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


@dataclass
class BuildResult:
    version: str
    manifest: dict


def build_version(
    versions: VersionStore,
    encoder: Encoder,
    documents: list[Document],
    whitening: WhiteningParams,
    spec: IndexSpec,
    on_progress: ProgressFn | None = None,
    progress_bar: bool = False,
) -> BuildResult:
    """Write a complete new version folder; the caller decides when to activate it.

    on_progress(done, total) counts documents encoded; it may raise to cancel.
    Any exception removes the partial folder and leaves every existing version as it was.
    """
    started = time.time()
    version, tmp = versions.new_version()
    try:
        texts = [d.text for d in documents]
        raw = encoder.encode(texts, progress=progress_bar, on_progress=on_progress)
        fit = Whitening.fit(raw.vectors, identity=encoder.identity, params=whitening)
        vectors = l2_normalize(fit.transform(raw.vectors))
        index = VectorIndex.build(vectors, spec, use_gpu=False)
        fit.save(tmp / WHITENING_FILE)
        index.save(tmp / INDEX_FILE)
        count = DocumentStore.write(tmp / DOCS_FILE, documents)
        warnings = []
        if fit.rank < fit.output_dim(whitening.dim) and whitening.gamma > 0:
            warnings.append(f"only {fit.rank} directions carry variance in {count} documents; whitening with "
                            f"gamma > 0 beyond dim {fit.rank} amplifies noise: lower dim or add documents")
        manifest = {
            "version": version,
            "created_at": time.time(),
            "build_seconds": round(time.time() - started, 3),
            "model": encoder_manifest(encoder),
            "whitening": {**fit.meta(), "output_dim": fit.output_dim(whitening.dim)},
            "index": {"spec": index.spec.to_dict(), "dim": index.dim, "count": index.count},
            "documents": {"count": count, "truncated": int(sum(raw.truncated))},
            "n_vectors": index.count,
            "jl_dim": jl_dim(count),
            "warnings": warnings,
        }
        versions.commit(version, tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built version %s: %d documents in %.1fs", version, count, manifest["build_seconds"])
    return BuildResult(version, manifest)
