"""FaissRetriever: a built index plus its change log, against brute force over the live documents."""

import asyncio
import sqlite3

import numpy as np
import pytest

from whitevec.index.changes import CHANGES_FILE, ChangeLog
from whitevec.index.filters import parse
from whitevec.index.faiss_index import VectorIndex
from whitevec.index.spec import IndexSpec, SearchParams
from whitevec.index.retriever import FaissRetriever
from whitevec.index.store import Document, DocumentStore
from whitevec.models.pipeline import l2_normalize

DIM = 16


def make(tmp_path, kind: str, n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, DIM)).astype(np.float32)
    spec = {"flat": IndexSpec("flat"), "ivf": IndexSpec("ivf", nlist=16, nprobe=16),
            "hnsw": IndexSpec("hnsw", ef_search=512)}[kind]
    index = VectorIndex.build(l2_normalize(raw), spec, use_gpu=False)
    docs = [Document(f"d{i}", f"text {i}", {"group": i % 3}) for i in range(n)]
    DocumentStore.write(tmp_path / "docs.sqlite", docs)

    def open_retriever() -> FaissRetriever:
        return FaissRetriever(index, DocumentStore(tmp_path / "docs.sqlite"),
                              ChangeLog(tmp_path / CHANGES_FILE, n, DIM), l2_normalize)

    return rng, raw, docs, open_retriever


def brute(live: dict[str, tuple[np.ndarray, dict]], q: np.ndarray, k: int, where: dict | None = None):
    ids = [i for i, (_, meta) in live.items() if where is None or all(meta.get(key) in vals for key, vals in where.items())]
    if not ids:
        return []
    x = l2_normalize(np.stack([live[i][0] for i in ids]))
    scores = x @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[j], float(scores[j])) for j in order]


@pytest.mark.parametrize("kind,overfetch", [("flat", False), ("ivf", False), ("hnsw", False), ("flat", True),
                                            ("ivf", True)])
def test_changes_search_like_brute_force_and_survive_a_reopen(tmp_path, kind, overfetch, monkeypatch):
    """overfetch: the GPU path (no row selector there: more hits asked for, deleted ones dropped), run on the CPU."""
    monkeypatch.setattr(VectorIndex, "overfetches", property(lambda self: overfetch))
    rng, raw, docs, open_retriever = make(tmp_path, kind)
    r = open_retriever()
    live = {d.id: (raw[i], d.metadata) for i, d in enumerate(docs)}
    for step in range(4):  # upserts of new ids and of existing ones (built and added), then deletes
        ids = [f"new{step}-{j}" for j in range(30)] + [f"d{j}" for j in rng.choice(len(docs), 20, replace=False)]
        ids += [f"new{step - 1}-{j}" for j in range(5)] if step else []
        ups = [Document(i, f"upserted {i}", {"group": int(rng.integers(3))}) for i in dict.fromkeys(ids)]
        vecs = rng.normal(size=(len(ups), DIM)).astype(np.float32)
        done = r.change(ups, vecs, [])
        assert done.upserted == len(ups)
        live.update({d.id: (v, d.metadata) for d, v in zip(ups, vecs)})
        dels = [f"d{j}" for j in rng.choice(len(docs), 40, replace=False)] + [f"new{step}-1", "nope"]
        done = r.change([], np.zeros((0, DIM), np.float32), dels)
        gone = [i for i in dict.fromkeys(dels) if i in live]
        assert done.deleted == len(gone) and done.missing == [i for i in dict.fromkeys(dels) if i not in gone]
        for i in gone:
            live.pop(i)
        assert r.count() == len(live)

    def check(retriever: FaissRetriever) -> None:
        queries = l2_normalize(rng.normal(size=(8, DIM)).astype(np.float32))
        for where in (None, {"group": [1]}, {"group": [0, 2]}):
            flt = None if where is None else parse({k: {"$in": v} for k, v in where.items()})
            found = asyncio.run(retriever.search(queries, 10, SearchParams(), flt))
            for q, hits in zip(queries, found):
                want = brute(live, q, 10, where)
                got = [(h.document.id, h.score) for h in hits]
                assert len(got) == len(want) == 10
                assert all(i in live for i, _ in got)  # no ghost hits: deleted and replaced ones never come back
                if where is not None:
                    assert all(live[i][1]["group"] in where["group"] for i, _ in got)
                if kind == "flat":
                    assert [i for i, _ in got] == [i for i, _ in want]
                    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
                else:  # approximate over the built rows: recall against the exact answer
                    assert len({i for i, _ in got} & {i for i, _ in want}) >= 8
        for doc_id in ("d5", "new3-0", "new0-3", "new3-1", "nope"):
            doc = retriever.get(doc_id)
            assert (doc is not None) == (doc_id in live)

    check(r)
    r.log.close()
    check(open_retriever())  # a restart replays the log into the same view


def test_drop_gone_keeps_order_and_pads():
    from whitevec.index.retriever import drop_gone

    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, -1, -1]], np.float32)
    ids = np.array([[3, 1, 2, 0], [1, 3, -1, -1]])
    gone = np.array([False, True, False, False])
    s, i = drop_gone(scores, ids, gone, 3)
    assert i.tolist() == [[3, 2, 0], [3, -1, -1]] and s[0].tolist() == pytest.approx([0.9, 0.7, 0.6])


def test_gpu_ordinal_reads_cuda_n():
    from whitevec.index.faiss_index import gpu_ordinal

    assert gpu_ordinal("cuda:2") == 2 and gpu_ordinal("cuda") is None and gpu_ordinal(None) is None
    with pytest.raises(ValueError, match="cuda:N"):
        gpu_ordinal("cuda:x")


def test_documents_for_a_rebuild_are_the_live_corpus_with_raw_vectors(tmp_path):
    rng, raw, docs, open_retriever = make(tmp_path, "flat", n=50)
    r = open_retriever()
    up = [Document("d3", "replaced", {}), Document("x", "added", {"a": 1})]
    vecs = rng.normal(size=(2, DIM)).astype(np.float32)
    r.change(up, vecs, [])
    r.change([], np.zeros((0, DIM), np.float32), ["d7"])
    got, got_raw = r.documents(raw)
    keep = [i for i in range(50) if i not in (3, 7)]
    assert [d.id for d in got] == [f"d{i}" for i in keep] + ["d3", "x"]
    np.testing.assert_array_equal(got_raw, np.concatenate([raw[keep], vecs]))
    assert r.pending_changes() == 4  # d3 and d7 gone from the built rows, d3 and x added


def test_a_damaged_change_log_is_refused_by_name(tmp_path):
    _, _, _, open_retriever = make(tmp_path, "flat", n=20)
    (tmp_path / CHANGES_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        open_retriever()


def test_a_second_holder_of_a_version_catches_up_on_refresh(tmp_path):
    """Two loads of one version (an activation loads outside the change lock): what the first acknowledged
    after the second loaded is in the second's view once it refreshes, and its filters see the new types."""
    rng, _, _, open_retriever = make(tmp_path, "flat", n=40)
    writer, late = open_retriever(), None
    writer.change([Document("a", "before", {"group": 1})], rng.normal(size=(1, DIM)).astype(np.float32), [])
    late = open_retriever()
    assert late.metadata_types()["group"] == {"number"}
    writer.change([Document("b", "after", {"group": "x"})], rng.normal(size=(1, DIM)).astype(np.float32), ["d5"])
    assert late.get("d5") is not None and late.pending_changes() == 1  # its view: before the second change
    late.refresh()
    assert late.count() == writer.count() == 41 and late.get("d5") is None and late.pending_changes() == 3
    q = l2_normalize(rng.normal(size=(1, DIM)).astype(np.float32))
    hits = asyncio.run(late.search(q, 50, SearchParams(), parse({"group": "x"})))[0]
    assert [h.document.id for h in hits] == ["b"]
    assert late.metadata_types()["group"] == {"number", "string"}
    late.refresh()  # nothing new: the same view
    assert late.count() == 41
    writer.close()
    late.close()


def test_a_version_without_changes_hands_a_rebuild_its_vectors_memory_mapped(tmp_path):
    rng, raw, docs, open_retriever = make(tmp_path, "flat", n=30)
    np.save(tmp_path / "raw.npy", raw)
    r = open_retriever()
    r.raw_path = tmp_path / "raw.npy"
    _, got = r.documents(r.stored_raw())
    assert isinstance(got, np.memmap) and np.array_equal(got, raw)  # read from disk as needed, not copied
    r.change([Document("x", "added", {})], rng.normal(size=(1, DIM)).astype(np.float32), [])
    _, got = r.documents(r.stored_raw())
    assert not isinstance(got, np.memmap) and len(got) == 31
    r.close()


def test_a_first_change_that_never_committed_leaves_the_version_servable(tmp_path, monkeypatch):
    """A crash (here: a failure) between the CHANGED marker and the first commit: nothing was acknowledged,
    so the next open must not call the log damaged."""
    from whitevec.index import changes as changes_module

    rng, _, _, open_retriever = make(tmp_path, "flat", n=20)
    r = open_retriever()

    def fail(conn, ids):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(changes_module, "record", fail)
    with pytest.raises(Exception, match="disk I/O error"):
        r.change([Document("x", "t", {})], rng.normal(size=(1, DIM)).astype(np.float32), [])
    r.close()
    monkeypatch.undo()
    again = open_retriever()  # CHANGED is there; so is a head that says nothing was acknowledged
    assert again.count() == 20 and (tmp_path / "CHANGED").exists()
    again.close()
