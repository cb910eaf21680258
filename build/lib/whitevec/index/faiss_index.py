"""FAISS inner-product search over L2-normalised vectors, on the best device available.

Device choice, reported by /readyz: `faiss-gpu` when FAISS sees GPUs (flat and
IVF are moved there; persisted through a CPU copy), `torch-cuda` when FAISS is
CPU-only but torch has CUDA (exact search as a matmul + top-k on the GPU),
`cpu` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import torch

INDEX_TYPES = ("flat", "ivf", "hnsw")


def faiss_gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


@dataclass(frozen=True)
class IndexSpec:
    """Index type and its parameters; None parameters are chosen from the corpus size."""

    type: str = "flat"
    nlist: int | None = None  # ivf: number of clusters
    nprobe: int | None = None  # ivf: clusters visited per query
    m: int | None = None  # hnsw: links per node
    ef_construction: int | None = None  # hnsw: candidate list while building
    ef_search: int | None = None  # hnsw: candidate list while searching

    def __post_init__(self) -> None:
        if self.type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {self.type!r}: choose one of {', '.join(INDEX_TYPES)}")
        for name in ("nlist", "nprobe", "m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"index parameter {name} must be ≥ 1, got {value}")

    def resolved(self, n: int) -> "IndexSpec":
        """Fill unset parameters with sane values for n vectors."""
        if self.type == "ivf":
            # ≥ 39 training points per centroid (FAISS's own floor), about 4·√n lists.
            nlist = self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            if nlist > n:
                raise ValueError(f"ivf nlist {nlist} exceeds the {n} vectors to index; lower nlist")
            nprobe = min(self.nprobe or max(1, nlist // 8), nlist)
            return replace(self, nlist=nlist, nprobe=nprobe)
        if self.type == "hnsw":
            return replace(self, m=self.m or 32, ef_construction=self.ef_construction or 80,
                           ef_search=self.ef_search or 128)
        return self

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class VectorIndex:
    """A built FAISS index whose int ids are row positions 0..n-1 in the document store."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, use_gpu: bool = True) -> None:
        self.spec = spec
        self.dim = index.d
        self.cpu_index = index
        self._apply_search_params(index)
        self.device = "cpu"
        self._search_index = index
        self._torch_vectors: torch.Tensor | None = None
        if use_gpu and faiss_gpu_count() > 0 and spec.type in ("flat", "ivf"):
            self._search_index = faiss.index_cpu_to_all_gpus(index)  # pragma: no cover - needs a GPU
            self.device = "faiss-gpu"
        elif use_gpu and spec.type == "flat" and torch.cuda.is_available():  # pragma: no cover - needs a GPU
            xb = index.reconstruct_n(0, index.ntotal)
            self._torch_vectors = torch.from_numpy(xb).to("cuda")
            self.device = "torch-cuda"

    def _apply_search_params(self, index: faiss.Index) -> None:
        if self.spec.type == "ivf":
            faiss.extract_index_ivf(index).nprobe = self.spec.nprobe
        elif self.spec.type == "hnsw":
            index.hnsw.efSearch = self.spec.ef_search

    @property
    def count(self) -> int:
        return int(self.cpu_index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, spec: IndexSpec, use_gpu: bool = True) -> "VectorIndex":
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        spec = spec.resolved(n)
        if spec.type == "flat":
            index = faiss.IndexFlatIP(d)
        elif spec.type == "ivf":
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, spec.nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        else:
            index = faiss.IndexHNSWFlat(d, spec.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.ef_construction
        index.add(x)
        return cls(index, spec, use_gpu)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, min(k, count)); ids are row positions."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.count)
        if self._torch_vectors is not None:  # pragma: no cover - needs a GPU
            scores, ids = torch.topk(torch.from_numpy(q).to("cuda") @ self._torch_vectors.T, k, dim=1)
            return scores.cpu().numpy(), ids.cpu().numpy()
        scores, ids = self._search_index.search(q, k)
        return scores, ids

    def save(self, path: Path) -> None:
        faiss.write_index(self.cpu_index, str(path))

    @classmethod
    def load(cls, path: Path, spec: IndexSpec, use_gpu: bool = True) -> "VectorIndex":
        return cls(faiss.read_index(str(path)), spec, use_gpu)
