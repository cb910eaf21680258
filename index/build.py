"""Building a new version from documents: encode, fit whitening, index, write, commit."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from whitevec.models.encoder import Encoder, EncodeResult
from whitevec.models.engines import explain
from whitevec.models.errors import WhitevecError
from whitevec.models.pipeline import l2_normalize
from whitevec.models.tuning import anisotropy
from whitevec.models.whitening import Whitening, WhiteningParams, jl_dim

from .bundle import encoder_manifest, model_ref
from .lexical import BM25
from .spec import IndexSpec
from .store import Documents
from .parts import WHITENING_FILE, describe_parts
from .versions import VersionStore

#: Below this many documents an approximate index (ivf, hnsw) is slower and less exact than flat.
MIN_APPROX_VECTORS = 10_000


def choose_spec(spec: IndexSpec, n: int, min_approx: int = MIN_APPROX_VECTORS) -> tuple[IndexSpec, str | None]:
    """The index to build for n documents, and a warning when the asked type was replaced by flat."""
    if spec.type != "flat" and n < min_approx:
        return IndexSpec("flat"), (f"built a flat (exact) index instead of {spec.type}: {n} documents are below "
                                   f"{min_approx} (WHITEVEC_MIN_APPROX_VECTORS), where {spec.type} is slower "
                                   "and less accurate than exact search")
    return spec, None

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
Chooser = Callable[[Whitening], tuple[WhiteningParams, dict]]


@dataclass
class BuildResult:
    version: str
    manifest: dict


def build_version(
    versions: VersionStore,
    encoder: Encoder,
    documents: Documents,
    whitening: WhiteningParams,
    spec: IndexSpec,
    on_progress: ProgressFn | None = None,
    progress_bar: bool = False,
    min_approx: int = MIN_APPROX_VECTORS,
    raw_vectors: np.ndarray | None = None,
    fit: Whitening | None = None,
    choose: Chooser | None = None,
    bm25: BM25 = BM25(),
    search: dict | None = None,
    tune_search: Callable[[Whitening], dict] | None = None,
    passages: dict | None = None,
) -> BuildResult:
    """Write a complete new version folder; the caller decides when to activate it.

    `documents` is read in passes (a list, or a lazy Corpus of a served version); only their texts are
    held at once, and only when encoding. on_progress(done, total) counts documents encoded; it may
    raise to cancel. With `raw_vectors`
    (the pooled vectors of `documents` by this encoder's model, from a version's raw.npy) nothing is
    encoded: whitening is refitted and the index rebuilt from them. With `fit`, that whitening is
    kept as it is (an upsert transforms new documents with the served fit; no refit). With `choose`, the
    (β, γ, dim) are picked after the fit (auto whitening): choose(fit) returns them and a report, which the
    manifest records under whitening.tuned.
    `search` is recorded as the version's default search (mode, fusion; carried from the version before);
    `tune_search(fit)`, when given, chooses it instead on labelled pairs with the final fit.
    `passages`: the documents are the rows of passages split with this setting (recorded; see
    index/passage_rows.py); the whitening is fitted on what is searched, the passages.
    Any exception removes the partial folder and leaves every existing version as it was.
    """
    started = time.time()
    version, tmp = versions.new_version()
    try:
        if raw_vectors is None:
            raw = encoder.encode([d.text for d in documents], progress=progress_bar, on_progress=on_progress)
        else:
            if raw_vectors.shape != (len(documents), encoder.dim):
                raise WhitevecError(f"stored raw vectors are {raw_vectors.shape}, expected ({len(documents)}, "
                                    f"{encoder.dim}): rebuild with reencode true")
            raw = EncodeResult(np.asarray(raw_vectors, dtype=np.float32), [False] * len(documents), [])
        warnings = []
        tuned = None
        if fit is None:
            fit = Whitening.fit(raw.vectors, identity=encoder.identity, params=whitening)
            if choose is not None:
                whitening, tuned = choose(fit)
                fit = fit.with_params(whitening)
            dim, lowered = fit.effective_dim(whitening.gamma, whitening.dim)
            if lowered:
                warnings.append(lowered)
                fit = fit.with_params(replace(whitening, dim=dim))
        spec, replaced = choose_spec(spec, len(documents), min_approx)
        if replaced:
            warnings.append(replaced)
        fit.save(tmp / WHITENING_FILE)
        if tune_search is not None:
            search = tune_search(fit)
        built = versions.target.build(version, tmp, documents, raw.vectors, spec,
                                      lambda r: l2_normalize(fit.transform(r)), bm25)
        spec, dim, count = built.spec, built.dim, built.count
        for warning in warnings:
            log.warning(warning)
        manifest = {
            "version": version,
            "created_at": time.time(),
            "build_seconds": round(time.time() - started, 3),
            "model": {"ref": model_ref(encoder.model_dir, versions.models_root), **encoder_manifest(encoder)},
            "engine_reason": explain(encoder.engine, encoder.device.type),
            "whitening": {**fit.meta(), "output_dim": fit.output_dim(fit.params.dim), "requested": whitening.to_dict(),
                          "anisotropy": anisotropy(raw.vectors), **({"tuned": tuned} if tuned is not None else {})},
            "backend": versions.target.backend,
            "index": {"spec": spec.to_dict(), "dim": dim, "count": count},
            "documents": {"count": count, "truncated": int(sum(raw.truncated))},
            "n_vectors": count,
            "jl_dim": jl_dim(count),
            **({"lexical": built.lexical} if built.lexical is not None else {}),
            **({"search": search} if search else {}),
            **({"passages": passages} if passages else {}),
            "warnings": warnings,
            "parts": describe_parts(tmp),
        }
        versions.commit(version, tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        versions.target.discard(version)
        raise
    log.info("built version %s: %d documents in %.1fs", version, count, manifest["build_seconds"])
    return BuildResult(version, manifest)
