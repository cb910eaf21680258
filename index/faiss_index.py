"""FAISS inner-product search over L2-normalised vectors, on the best device available.

Device choice (`choose_device`, reported by /readyz): `faiss-gpu` when FAISS sees GPUs
(flat and IVF are copied there; persisted from the CPU copy), `torch-cuda` when FAISS is
CPU-only but torch has CUDA (exact search as a chunked matmul + top-k), `cpu` otherwise.
WHITEVEC_DEVICE=cpu keeps search on the CPU too.

Every unfiltered search runs in one thread per index (`SerialSearcher`), which coalesces queued
queries into one call: FAISS GPU indexes are not thread-safe, and on the CPU one stacked call
beats N concurrent ones. That thread lives only while searches come; `close()` ends it and
drops any GPU copy, and the served-version holder closes an index once it is swapped out.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # "Could not load library with AVX512" noise
import faiss  # noqa: E402

from .spec import IndexSpec, SearchParams, check_search_params  # noqa: E402

log = logging.getLogger(__name__)

#: FAISS GPU's largest nprobe (and k): GPU_MAX_SELECTION_K.
FAISS_GPU_MAX_NPROBE = 2048
#: The torch search holds at most this many scores at once (queries × chunk of the corpus).
TORCH_SCORE_BUDGET = 1 << 26


def faiss_gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def gpu_ordinal(device: str | None) -> int | None:
    """The GPU `cuda:N` names (None for plain `cuda` or no device: every GPU FAISS sees)."""
    if device is None or not device.startswith("cuda:"):
        return None
    try:
        return int(device.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"device {device!r} is not cuda or cuda:N") from None


def index_cpu_to_gpu(index: faiss.Index, device: str | None) -> tuple[faiss.Index, Any]:  # pragma: no cover - GPU
    """The index copied to WHITEVEC_DEVICE's GPU (cuda:N), or spread over all GPUs for plain cuda; with
    the resources object the copy needs alive."""
    ordinal = gpu_ordinal(device)
    if ordinal is None:
        return faiss.index_cpu_to_all_gpus(index), None
    resources = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(resources, ordinal, index), resources


def choose_device(spec: IndexSpec, use_gpu: bool, device: str | None, faiss_gpus: int, torch_cuda: bool) -> str:
    """Where an index is searched: `faiss-gpu`, `torch-cuda` or `cpu` (see the module docstring)."""
    if not use_gpu or (device is not None and not device.startswith("cuda")):
        return "cpu"
    if faiss_gpus > 0 and spec.type == "flat":
        return "faiss-gpu"
    if faiss_gpus > 0 and spec.type == "ivf" and (spec.nprobe or 1) <= FAISS_GPU_MAX_NPROBE:
        return "faiss-gpu"
    if torch_cuda and spec.type == "flat":
        return "torch-cuda"
    return "cpu"


#: A metadata filter matching at most this many documents is searched exactly over them.
EXACT_FILTER_ROWS = 20_000


def faiss_params(params: SearchParams, sel: Any = None) -> Any:
    """FAISS's search parameters for a request (with an id selector `sel` for filtered searches)."""
    if params.nprobe is not None:
        return faiss.SearchParametersIVF(nprobe=params.nprobe, sel=sel)
    if params.ef_search is not None:
        return faiss.SearchParametersHNSW(efSearch=params.ef_search, sel=sel)
    return faiss.SearchParameters(sel=sel) if sel is not None else None


def torch_topk(vectors: torch.Tensor, queries: np.ndarray, k: int,
               budget: int = TORCH_SCORE_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over `vectors` (on any torch device), a chunk of the corpus at a
    time so the score matrix never exceeds `budget` elements."""
    n = vectors.shape[0]
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(vectors.device)
    chunk = max(k, budget // max(1, q.shape[0]))
    best_s: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start in range(0, n, chunk):
        scores = q @ vectors[start : start + chunk].T
        s, i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        i = i + start
        if best_s is None or best_i is None:
            best_s, best_i = s, i
            continue
        merged_s, merged_i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i], dim=1)
        best_s, pos = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1)
        best_i = torch.gather(merged_i, 1, pos)
    assert best_s is not None and best_i is not None
    return best_s.cpu().numpy(), best_i.cpu().numpy()


def _closed_search(queries: np.ndarray, k: int, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
    raise RuntimeError("this index was closed (its version was swapped out); retry the request")


class SerialSearcher:
    """Runs every search in one thread; queries queued meanwhile with the same (k, params) are
    stacked into one call. The thread starts with the first search and ends after IDLE_S without
    one (or at close), so an index that is built, swapped out or never searched holds no thread."""

    IDLE_S = 2.0

    def __init__(self, search: Callable[[np.ndarray, int, SearchParams], tuple[np.ndarray, np.ndarray]],
                 name: str = "whitevec-search") -> None:
        self._search = search
        self._name = name
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, queries: np.ndarray, k: int, params: SearchParams) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("this index was closed (its version was swapped out); retry the request")
            self._queue.put((queries, k, params, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
        return future

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.put(None)
            if self._thread is None:  # no thread will run a search again: let go of the index
                self._search = _closed_search

    def _next(self) -> tuple | None:
        """The next item; None when closed or idle (the thread then ends, under the lock submit takes)."""
        try:
            return self._queue.get(timeout=self.IDLE_S)
        except queue.Empty:
            with self._lock:
                if self._queue.empty():
                    self._thread = None
                    return None
            return self._queue.get()

    def _work(self) -> None:
        while (first := self._next()) is not None:
            group, rest = [first], []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    rest.append(item)
                    break
                (group if item[1:3] == first[1:3] else rest).append(item)
            for item in rest:
                self._queue.put(item)
            self._run(group)
        with self._lock:
            if self._closed:
                self._thread = None
                self._search = _closed_search

    def _run(self, group: list) -> None:
        k, params = group[0][1], group[0][2]
        try:
            scores, ids = self._search(np.concatenate([g[0] for g in group]), k, params)
        except Exception as exc:
            for g in group:
                g[3].set_exception(exc)
            return
        start = 0
        for queries, _, _, future in group:
            end = start + len(queries)
            future.set_result((scores[start:end], ids[start:end]))
            start = end


_LIVE: "weakref.WeakSet[VectorIndex]" = weakref.WeakSet()


class VectorIndex:
    """A built FAISS index whose int ids are row positions 0..n-1 in the document store."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, use_gpu: bool = True, device: str | None = None) -> None:
        self.spec = spec
        self.dim = index.d
        self.cpu_index = index
        self._apply_search_params(index)
        self.device = choose_device(spec, use_gpu, device, faiss_gpu_count() if use_gpu else 0,
                                    use_gpu and torch.cuda.is_available())
        self._gpu_index: faiss.Index | None = None
        self._torch_vectors: torch.Tensor | None = None
        self._serial: SerialSearcher | None = None
        self._direct_map_lock = threading.Lock()
        _LIVE.add(self)
        self._gpu_resources: Any = None
        if self.device == "faiss-gpu":
            self._gpu_index, self._gpu_resources = index_cpu_to_gpu(index, device)
            self._serial = SerialSearcher(self._search_gpu, "whitevec-faiss-gpu")
        elif self.device == "torch-cuda":  # pragma: no cover - needs a GPU
            xb = index.reconstruct_n(0, index.ntotal)
            self._torch_vectors = torch.from_numpy(xb).to(device or "cuda")
            self._serial = SerialSearcher(self._search_torch, "whitevec-torch-search")
        else:  # CPU: concurrent queries stacked into one call (BLAS / OpenMP over the batch), not N threads
            self._serial = SerialSearcher(self._search_cpu, "whitevec-faiss-cpu")

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

    def search_params(self, nprobe: int | None, ef_search: int | None, max_nprobe: int,
                      max_ef_search: int) -> SearchParams:
        return check_search_params(self.spec, nprobe, ef_search, max_nprobe, max_ef_search)

    def search(self, queries: np.ndarray, k: int,
               params: SearchParams = SearchParams()) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, min(k, count)); ids are row positions. Blocking."""
        if self._serial is not None and not self._needs_cpu(params):
            return self._serial.submit(np.ascontiguousarray(queries, dtype=np.float32), k, params).result()
        return self._search_cpu(queries, k, params)

    async def search_async(self, queries: np.ndarray, k: int,
                           params: SearchParams = SearchParams()) -> tuple[np.ndarray, np.ndarray]:
        if self._serial is not None and not self._needs_cpu(params):
            future = self._serial.submit(np.ascontiguousarray(queries, dtype=np.float32), k, params)
            return await asyncio.wrap_future(future)
        return await asyncio.to_thread(self._search_cpu, queries, k, params)

    @property
    def overfetches(self) -> bool:
        """Searched off the CPU, where FAISS has no row selector: deleted rows are skipped by asking for
        more hits and dropping them, not by falling back to the CPU copy."""
        return self.device != "cpu"

    def _needs_cpu(self, params: SearchParams) -> bool:
        """FAISS GPU cannot probe more than FAISS_GPU_MAX_NPROBE lists: such a query runs on the CPU copy."""
        return self.device == "faiss-gpu" and (params.nprobe or 0) > FAISS_GPU_MAX_NPROBE

    def _search_cpu(self, queries: np.ndarray, k: int, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return self.cpu_index.search(q, min(k, self.count), params=faiss_params(params))

    def search_rows(self, queries: np.ndarray, k: int, rows: np.ndarray,
                    params: SearchParams = SearchParams()) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, among the given rows only (a metadata filter's matches): k hits whenever
        k rows match. Flat scans just those rows; ivf/hnsw search with a FAISS selector and fall back
        to exact search over the rows when the approximate pass comes back short, as does a small
        set (at most EXACT_FILTER_ROWS), where exact is also the faster. CPU. Blocking."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        want = min(k, len(rows))
        if want == 0:
            return np.zeros((len(q), 0), dtype=np.float32), np.zeros((len(q), 0), dtype=np.int64)
        if self.spec.type != "flat" and len(rows) <= EXACT_FILTER_ROWS:
            return self._exact_rows(q, want, rows)
        sel, _bits = self._selector(rows)  # _bits: the bitmap must outlive the search
        if self.spec.type == "ivf" and params.nprobe is None:  # typed parameters carry the selector
            params = SearchParams(nprobe=self.spec.nprobe)
        elif self.spec.type == "hnsw" and params.ef_search is None:
            params = SearchParams(ef_search=self.spec.ef_search)
        scores, ids = self.cpu_index.search(q, want, params=faiss_params(params, sel))
        if (ids < 0).any():
            return self._exact_rows(q, want, rows)
        return scores, ids

    def _selector(self, rows: np.ndarray) -> tuple[Any, np.ndarray | None]:
        """A FAISS selector for sorted unique rows: a hash set for few, a bitmap (count/8 bytes) for many."""
        if len(rows) <= 4096:
            return faiss.IDSelectorBatch(rows), None
        mask = np.zeros(self.count, dtype=bool)
        mask[rows] = True
        bits = np.packbits(mask, bitorder="little")
        return faiss.IDSelectorBitmap(self.count, faiss.swig_ptr(bits)), bits

    def _exact_rows(self, q: np.ndarray, k: int, rows: np.ndarray,
                    chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
        best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_i = np.zeros((len(q), 0), dtype=np.int64)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            scores = q @ self._reconstruct(part).T
            s = np.concatenate([best_s, scores], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(part, scores.shape)], axis=1)
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
            best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        return best_s, best_i

    def _reconstruct(self, rows: np.ndarray) -> np.ndarray:
        if self.spec.type == "ivf":
            with self._direct_map_lock:
                ivf = faiss.extract_index_ivf(self.cpu_index)
                if ivf.direct_map.type == faiss.DirectMap.NoMap:
                    ivf.make_direct_map()
        return self.cpu_index.reconstruct_batch(rows)

    def _search_gpu(self, queries: np.ndarray, k: int, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        assert self._gpu_index is not None
        return self._gpu_index.search(queries, min(k, self.count), params=faiss_params(params))

    def _search_torch(self, queries: np.ndarray, k: int,
                      params: SearchParams) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - needs a GPU
        assert self._torch_vectors is not None
        return torch_topk(self._torch_vectors, queries, min(k, self.count))

    def close(self) -> None:
        """Stop the search thread and drop the GPU copy (what an index holds besides its CPU arrays)."""
        if self._serial is not None:
            self._serial.close()  # it drops its reference back to this index: no cycle to wait for
        self._gpu_index = None
        self._gpu_resources = None
        self._torch_vectors = None
        _LIVE.discard(self)

    @staticmethod
    def live() -> int:
        """Indexes built or loaded and not yet closed (a leak shows as a count that grows)."""
        return len(_LIVE)

    def save(self, path: Path) -> None:
        faiss.write_index(self.cpu_index, str(path))

    @classmethod
    def load(cls, path: Path, spec: IndexSpec, use_gpu: bool = True, device: str | None = None) -> "VectorIndex":
        return cls(faiss.read_index(str(path)), spec, use_gpu, device)
