"""Approximate indexes against the exact flat index (as faiss's own tests/test_contrib.py does)."""

import numpy as np
import pytest

from whitevec.index.faiss_index import VectorIndex

from whitevec.index.spec import IndexSpec


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 2), d))
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    k = exact_ids.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx_ids, exact_ids)]))


def test_flat_is_exact():
    x, q = clustered(2000), clustered(20, seed=1)
    scores, ids = VectorIndex.build(x, IndexSpec("flat")).search(q, 10)
    want = q @ x.T
    np.testing.assert_array_equal(ids, np.argsort(-want, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.sort(want, axis=1)[:, ::-1][:, :10], atol=1e-5)


@pytest.mark.parametrize("spec,floor", [(IndexSpec("ivf"), 0.9), (IndexSpec("hnsw"), 0.95),
                                        (IndexSpec("ivf", nlist=16, nprobe=16), 0.999)])
def test_approximate_indexes_recall_against_flat(spec, floor):
    x, q = clustered(5000), clustered(200, seed=1)
    _, exact = VectorIndex.build(x, IndexSpec("flat")).search(q, 10)
    _, approx = VectorIndex.build(x, spec).search(q, 10)
    assert recall_at_k(approx, exact) >= floor


def test_parameters_chosen_from_corpus_size():
    ivf = IndexSpec("ivf").resolved(100_000)
    assert ivf.nlist == 1264 and 1 <= ivf.nprobe <= ivf.nlist
    assert IndexSpec("ivf").resolved(50).nlist == 1  # too few points for more lists
    hnsw = IndexSpec("hnsw", m=16).resolved(10)
    assert (hnsw.m, hnsw.ef_search) == (16, 128)
    assert IndexSpec("hnsw").resolved(1_000_000).ef_search == 256  # recall@10 ≥ 0.95 at 1M (README)
    with pytest.raises(ValueError, match="exceeds the 10 vectors"):
        IndexSpec("ivf", nlist=20).resolved(10)
    with pytest.raises(ValueError, match="choose one of flat, ivf, hnsw"):
        IndexSpec("annoy")
    with pytest.raises(ValueError, match="nprobe must be"):
        IndexSpec("ivf", nprobe=0)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_roundtrip(tmp_path, kind):
    x, q = clustered(1000), clustered(10, seed=1)
    built = VectorIndex.build(x, IndexSpec(kind))
    built.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss", built.spec)
    assert loaded.count == 1000 and loaded.device == "cpu"
    for a, b in zip(built.search(q, 5), loaded.search(q, 5)):
        np.testing.assert_array_equal(a, b)


def test_k_above_count_returns_everything():
    x = clustered(5)
    scores, ids = VectorIndex.build(x, IndexSpec("flat")).search(x[:1], 10)
    assert ids.shape == (1, 5) and sorted(ids[0]) == [0, 1, 2, 3, 4]


def test_per_request_nprobe_and_ef_search():
    from whitevec.models.errors import WhitevecError

    x, q = clustered(4000), clustered(50, seed=2)
    exact = VectorIndex.build(x, IndexSpec("flat")).search(q, 10)[1]
    ivf = VectorIndex.build(x, IndexSpec("ivf", nlist=64, nprobe=1))
    low = ivf.search(q, 10, ivf.search_params(1, None, 2048, 4096))[1]
    full = ivf.search(q, 10, ivf.search_params(64, None, 2048, 4096))[1]
    assert recall_at_k(full, exact) == 1.0 and recall_at_k(low, exact) < 1.0
    assert recall_at_k(ivf.search(q, 10)[1], exact) == recall_at_k(low, exact)  # the version's own nprobe
    with pytest.raises(WhitevecError, match="above WHITEVEC_MAX_NPROBE 16"):
        ivf.search_params(32, None, 16, 4096)
    # nprobe past nlist visits every list; a parameter of another index type is ignored
    assert ivf.search_params(65, 16, 2048, 4096) == ivf.search_params(64, None, 2048, 4096)
    hnsw = VectorIndex.build(x, IndexSpec("hnsw", ef_search=16))
    wide = hnsw.search(q, 10, hnsw.search_params(None, 512, 2048, 4096))[1]
    assert recall_at_k(wide, exact) >= recall_at_k(hnsw.search(q, 10)[1], exact) and recall_at_k(wide, exact) > 0.99
    assert hnsw.search_params(4, None, 2048, 4096).nprobe is None
    with pytest.raises(WhitevecError, match="above WHITEVEC_MAX_EF_SEARCH 4096"):
        hnsw.search_params(None, 5000, 2048, 4096)


@pytest.mark.parametrize("spec,use_gpu,device,gpus,cuda,want", [
    (IndexSpec("flat"), True, None, 0, False, "cpu"),
    (IndexSpec("flat"), True, None, 1, True, "faiss-gpu"),
    (IndexSpec("ivf", nprobe=64), True, None, 1, True, "faiss-gpu"),
    (IndexSpec("ivf", nprobe=4096), True, None, 1, True, "cpu"),  # above FAISS GPU's nprobe limit
    (IndexSpec("hnsw"), True, None, 1, True, "cpu"),  # FAISS has no GPU HNSW
    (IndexSpec("flat"), True, None, 0, True, "torch-cuda"),
    (IndexSpec("flat"), True, "cuda:1", 0, True, "torch-cuda"),
    (IndexSpec("flat"), True, "cpu", 1, True, "cpu"),  # WHITEVEC_DEVICE=cpu keeps search on the CPU
    (IndexSpec("flat"), False, None, 1, True, "cpu"),
])
def test_device_choice(spec, use_gpu, device, gpus, cuda, want):
    from whitevec.index.faiss_index import choose_device

    assert choose_device(spec, use_gpu, device, gpus, cuda) == want


@pytest.mark.parametrize("budget", [1 << 26, 64, 10])
def test_torch_topk_in_chunks_equals_exact_search(budget):
    import torch

    from whitevec.index.faiss_index import torch_topk

    x, q = clustered(1000), clustered(7, seed=3)
    want_s, want_i = VectorIndex.build(x, IndexSpec("flat")).search(q, 10)
    scores, ids = torch_topk(torch.from_numpy(x), q, 10, budget=budget)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)


class OneThreadAtATime:
    """Stands in for a FAISS GPU index (none here): a real CPU index that fails on concurrent entry."""

    def __init__(self, index):
        import threading

        self.index, self.inside, self.threads, self.calls = index, threading.Lock(), set(), []

    def search(self, q, k, params=None):
        import threading
        import time

        if not self.inside.acquire(blocking=False):
            raise AssertionError("searched from two threads at once")
        try:
            self.threads.add(threading.get_ident())
            self.calls.append((len(q), params))
            time.sleep(0.002)
            return self.index.search(q, k, params=params)
        finally:
            self.inside.release()


def test_gpu_indexes_are_searched_from_one_thread_with_coalescing(monkeypatch):
    import faiss as faiss_module
    from concurrent.futures import ThreadPoolExecutor

    from whitevec.index import faiss_index

    stand_ins = []
    monkeypatch.setattr(faiss_index, "faiss_gpu_count", lambda: 1)
    monkeypatch.setattr(faiss_index, "index_cpu_to_gpu", lambda index, device: (
        stand_ins.append(OneThreadAtATime(faiss_module.clone_index(index))) or stand_ins[-1], None))
    x, q = clustered(3000), clustered(200, seed=4)
    gpu = VectorIndex.build(x, IndexSpec("ivf", nlist=32, nprobe=8))
    assert gpu.device == "faiss-gpu"
    cpu = VectorIndex.build(x, IndexSpec("ivf", nlist=32, nprobe=8), use_gpu=False)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: gpu.search(q[i : i + 1], 5), range(len(q))))
    want = cpu.search(q, 5)[1]
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), want)
    stand_in = stand_ins[0]
    assert len(stand_in.threads) == 1 and len(stand_in.calls) < len(q)  # one thread, queries coalesced
    # nprobe above FAISS GPU's limit runs on the CPU copy instead
    monkeypatch.setattr(faiss_index, "FAISS_GPU_MAX_NPROBE", 16)
    n_calls = len(stand_in.calls)
    ids = gpu.search(q[:3], 5, gpu.search_params(32, None, 2048, 4096))[1]
    assert len(stand_in.calls) == n_calls
    np.testing.assert_array_equal(ids, cpu.search(q[:3], 5, cpu.search_params(32, None, 2048, 4096))[1])
