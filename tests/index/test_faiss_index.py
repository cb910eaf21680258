"""Approximate indexes against the exact flat index (as faiss's own tests/test_contrib.py does)."""

import numpy as np
import pytest

from whitevec.index.faiss_index import IndexSpec, VectorIndex


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
