"""The Milvus backend (embedded Milvus Lite) against the FAISS one: same top-10 on exact settings."""

import asyncio

import numpy as np
import pytest

from whitevec.index.changes import CHANGES_FILE, ChangeLog
from whitevec.index.faiss_index import VectorIndex
from whitevec.index.spec import IndexSpec, SearchParams
from whitevec.index.filters import matches, parse
from whitevec.index.milvus import MilvusRetriever
from whitevec.index.milvus_fields import milvus_filter, tag, typed
from whitevec.index.milvus_target import alias_target, point_alias
from whitevec.index.retriever import FaissRetriever
from whitevec.index.store import Document, DocumentStore
from whitevec.models.pipeline import l2_normalize

pytestmark = pytest.mark.milvus


DIM = 16
FILTERS = [None, {"g": 1}, {"g": True}, {"g": "1"}, {"g": None}, {"g": {"$in": [1, "x"]}, "h": 2.0}, {"h": 7},
           {"l": "b"}, {"l": {"$nin": ["a", 3]}}, {"g": {"$ne": 1}}, {"h": {"$gte": 1, "$lt": 2}}, {"l": {"$gt": 2}},
           {"g": {"$exists": False}}, {"o": {"$exists": True}}, {"o": {"$eq": None}},
           {"g": {"$in": ["x", "x\u0000y"]}}, {"l": {"$nin": ["a\n", "b"]}}]  # control characters: checked by whitevec


def metadata(i: int) -> dict:
    g = [1, 1.0, True, "1", None, "x", 2][i % 7]
    meta = {"g": g, "h": i % 3, "l": [["a", "b"], ["b", 3], [], [None, {"x": 1}]][i % 4]}
    if i % 6 == 0:
        meta["o"] = {"nested": i}
    if i % 5 == 0:
        del meta["g"]  # a missing key never matches, not even null
    return meta


@pytest.fixture
def client(tmp_path):
    from pymilvus import MilvusClient

    c = MilvusClient(str(tmp_path / "milvus.db"))
    yield c
    c.close()


def test_tags_keep_json_types_apart():
    assert tag(1) == tag(1.0) == "n:1" and tag(True) == "b:true" and tag("1") == "s:1" and tag(None) == "z:"
    assert tag([1]) is None and tag({"a": 1}) is None
    assert typed({"a": [1, "x", [2]], "b": {"c": 1}, "d": None}) == {"a": ["n:1", "s:x"], "b": "o:", "d": "z:"}
    assert milvus_filter(parse({"k": 'a"b'})) == ('(typed["k"] == "s:a\\"b" or json_contains_any(typed["k"], ["s:a\\"b"]))', True)
    expr, exact = milvus_filter(parse({"k": {"$in": [1, 1.0, True]}, "j": {"$gt": 1}}))
    assert 'typed["k"] == "n:1" or typed["k"] == "b:true"' in expr and 'exists typed["j"]' in expr and not exact


def test_milvus_and_faiss_flat_give_the_same_hits_before_and_after_changes(tmp_path, client):
    rng = np.random.default_rng(1)
    n = 1500
    raw = rng.normal(size=(n, DIM)).astype(np.float32)
    docs = [Document(f"d{i}", f"text {i}", metadata(i)) for i in range(n)]
    index = VectorIndex.build(l2_normalize(raw), IndexSpec("flat"), use_gpu=False)
    DocumentStore.write(tmp_path / "docs.sqlite", docs)
    faiss_r = FaissRetriever(index, DocumentStore(tmp_path / "docs.sqlite"),
                             ChangeLog(tmp_path / CHANGES_FILE, n, DIM), l2_normalize)
    milvus_r = MilvusRetriever.create(client, "wv_test_1", docs, raw, IndexSpec("flat"), l2_normalize)
    assert milvus_r.count() == faiss_r.count() == n

    def same_hits() -> None:
        queries = l2_normalize(rng.normal(size=(6, DIM)).astype(np.float32))
        for raw_filter in FILTERS:
            where = None if raw_filter is None else parse(raw_filter)
            a = asyncio.run(faiss_r.search(queries, 10, SearchParams(), where))
            b = asyncio.run(milvus_r.search(queries, 10, SearchParams(), where))
            for ha, hb in zip(a, b):
                assert [h.document.id for h in ha] == [h.document.id for h in hb], raw_filter
                np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-4)
                assert [h.document.metadata for h in ha] == [h.document.metadata for h in hb]
                assert all(where is None or matches(h.document.metadata, where) for h in hb), raw_filter
                assert len(hb) == 10 or raw_filter in ({"h": 7}, {"o": {"$eq": None}}, FILTERS[-1]), raw_filter  # others: > k
        assert milvus_r.metadata_types() == faiss_r.metadata_types()

    same_hits()
    ups = [Document(f"d{i}", f"new {i}", {"g": 1, "h": 7}) for i in range(0, 300, 3)]
    ups += [Document(f"n{i}", f"added {i}", {"h": 7}) for i in range(50)]
    vecs = rng.normal(size=(len(ups), DIM)).astype(np.float32)
    dels = [f"d{i}" for i in range(1, 400, 4)] + ["n3", "never"]
    for r in (faiss_r, milvus_r):
        assert r.count_after([d.id for d in ups], []) == n + 50
        r.change(ups, vecs, [])
        done = r.change([], np.zeros((0, DIM), np.float32), dels)
        assert done.deleted == len(dels) - 1 and done.missing == ["never"]
    assert milvus_r.count() == faiss_r.count() == n + 50 - (len(dels) - 1)
    same_hits()
    assert milvus_r.get("n3") is None and milvus_r.get("d0").text == "new 0" == faiss_r.get("d0").text

    got, got_raw = milvus_r.documents()
    want, want_raw = faiss_r.documents(raw)
    order = {d.id: i for i, d in enumerate(want)}
    assert sorted(d.id for d in got) == sorted(order)
    np.testing.assert_array_equal(got_raw, want_raw[[order[d.id] for d in got]])


def test_activation_is_an_alias_switch_seen_by_every_reader(tmp_path, client):
    rng = np.random.default_rng(2)
    docs = [Document(f"d{i}", f"text {i}", {}) for i in range(20)]
    MilvusRetriever.create(client, "wv_v1", docs, rng.normal(size=(20, DIM)).astype(np.float32),
                           IndexSpec("flat"), l2_normalize)
    MilvusRetriever.create(client, "wv_v2", docs[:10], rng.normal(size=(10, DIM)).astype(np.float32),
                           IndexSpec("flat"), l2_normalize)
    assert alias_target(client, "whitevec") is None
    point_alias(client, "whitevec", "wv_v1")
    assert alias_target(client, "whitevec") == "wv_v1"
    reader = MilvusRetriever(client, "whitevec", IndexSpec("flat"), DIM, DIM, l2_normalize)
    assert reader.count() == 20
    point_alias(client, "whitevec", "wv_v2")
    assert alias_target(client, "whitevec") == "wv_v2" and reader.count() == 10


def test_activation_is_a_compare_and_swap_on_the_shared_alias(tmp_path, client, tiny_encoder):
    """Replicas A and B share the bundle dir and the alias. Both jobs read v1; B activates v3 first; A's
    activation of v2 must then fail and leave the alias on v3 (flipping it back would drop the writes
    acknowledged on B's version)."""
    from whitevec.index.build import build_version
    from whitevec.index.milvus_target import MilvusTarget
    from whitevec.index.versions import ServedVersionChanged, VersionStore
    from whitevec.models.whitening import WhiteningParams
    from tests.conftest import demo_documents

    docs = [Document(d["id"], d["text"], d["metadata"]) for d in demo_documents()]
    folder = tmp_path / "bundles" / "collections" / "default"
    target = MilvusTarget(client, "wv_cas", "default")
    a, b = (VersionStore(folder, target, shared=True) for _ in range(2))
    v1, v2, v3 = (build_version(a, tiny_encoder, docs, WhiteningParams(), IndexSpec("flat")).version for _ in range(3))
    a.activate(v1)
    b.activate(v3, expected=v1)
    with pytest.raises(ServedVersionChanged, match=f"version {v3} was activated while this job ran"):
        a.activate(v2, expected=v1)
    assert a.switched_to() == b.switched_to() == v3 and a.active() == v3
    a.activate(v2, expected=v3)  # a job that read what is served now goes through
    assert b.switched_to() == v2


def test_slow_milvus_searches_never_starve_the_default_executor(tmp_path, client, monkeypatch):
    """Range filters make Milvus searches scan in Python: they run in the version's own threads, so the
    default executor (every other to_thread call of the server) stays free."""
    import time

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(50, DIM)).astype(np.float32)
    docs = [Document(f"d{i}", "t", {"n": i}) for i in range(50)]
    r = MilvusRetriever.create(client, "wv_pool_1", docs, raw, IndexSpec("flat"), l2_normalize)
    original = r._search
    monkeypatch.setattr(r, "_search", lambda *a: (time.sleep(0.5), original(*a))[1])

    async def run():
        q = l2_normalize(raw[:1])
        pool = min(32, (__import__("os").cpu_count() or 1) + 4)  # the default executor's size on this machine
        slow = [asyncio.ensure_future(r.search(q, 3, SearchParams(), parse({"n": {"$gt": 5}})))
                for _ in range(pool + 4)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(lambda: None)
        waited = time.monotonic() - started
        hits = await asyncio.gather(*slow)
        return waited, hits

    waited, hits = asyncio.run(run())
    assert waited < 0.25 and all(len(h[0]) == 3 for h in hits)
    r.close()
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith("whitevec-milvus-search")]


def test_lexical_search_on_milvus_gives_the_faiss_backends_hits(tmp_path, client):
    """Milvus's BM25 function over whitevec's words: built, every document holding a query word with the score
    the FAISS backend's own index gives it (k1, b passed through), with exact and checked filters; after
    upserts and deletes the same documents match (Milvus Lite scores each segment with its own statistics,
    so only membership is compared there)."""
    import random

    from whitevec.index import analyzer
    from whitevec.index.lexical import BM25, LexicalIndex, Postings
    from whitevec.index.milvus_fields import term_token, terms_text
    from tests.index.test_lexical import WORDS

    rng, nrng = random.Random(3), np.random.default_rng(3)
    n = 400
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]
    docs = [Document(f"d{i}", texts[i], metadata(i)) for i in range(n)]
    raw = nrng.normal(size=(n, DIM)).astype(np.float32)
    params = BM25(k1=1.5, b=0.6)
    DocumentStore.write(tmp_path / "docs.sqlite", docs)
    faiss_r = FaissRetriever(VectorIndex.build(l2_normalize(raw), IndexSpec("flat"), use_gpu=False),
                             DocumentStore(tmp_path / "docs.sqlite"), ChangeLog(tmp_path / CHANGES_FILE, n, DIM),
                             l2_normalize, lexical=LexicalIndex(Postings.build(texts), params))
    milvus_r = MilvusRetriever.create(client, "wv_lex_1", docs, raw, IndexSpec("flat"), l2_normalize, params)
    assert milvus_r.has_lexical and faiss_r.has_lexical
    queries = ["rain guitar", "天气预报 north", "CAFÉ", "天气", "x-ray naïve 42", "nothing here", "ＡＢＣ the a"]
    terms = [analyzer.analyze(q) for q in queries]

    def scored(r, where, k=n):
        return [{h.document.id: h.score for h in hits} for hits in asyncio.run(r.search_lexical(terms, k, where))]

    for raw_filter in FILTERS:
        where = None if raw_filter is None else parse(raw_filter)
        want, got = scored(faiss_r, where), scored(milvus_r, where)
        for q, a, b in zip(queries, want, got):
            assert sorted(a) == sorted(b), (q, raw_filter)
            np.testing.assert_allclose([b[i] for i in sorted(a)], [a[i] for i in sorted(a)], rtol=1e-4)
        top = asyncio.run(milvus_r.search_lexical(terms, 5, where))
        for q, a, hits in zip(queries, want, top):  # k = 5: the five best, each matching the filter
            assert len(hits) == min(5, len(a)) and all(where is None or matches(h.document.metadata, where) for h in hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            np.testing.assert_allclose([h.score for h in hits], sorted(a.values(), reverse=True)[:len(hits)], rtol=1e-4)
    assert asyncio.run(milvus_r.search_lexical([[], ["zzz"]], 5)) == [[], []]

    ups = [Document("d0", "吉他 吉他 弹", {"g": 1}), Document("new", "guitar rain", {"h": 7})]
    for r in (faiss_r, milvus_r):
        r.change(ups, nrng.normal(size=(2, DIM)).astype(np.float32), ["d1", "d2", "d3"])
    for where in (None, parse({"h": 7}), parse({"h": {"$gte": 1}})):
        want, got = scored(faiss_r, where), scored(milvus_r, where)
        assert [sorted(a) for a in want] == [sorted(b) for b in got]
    assert "new" in got[0] and "d0" not in got[1] and not any(f"d{i}" in g for g in got for i in (1, 2, 3))

    assert len(term_token("天气")) <= 10 and term_token("天气") != term_token("天")
    assert terms_text(["x"] * 10) == " ".join([term_token("x")] * 10)
    assert len(terms_text(["w%d" % i for i in range(20_000)]).encode()) <= 65_535  # a very long text is cut


def test_a_version_no_replica_serves_is_released_at_close(tmp_path, client):
    """The alias moved on: the last holder's close releases the old collection; a replica that still searches
    it loads it again instead of failing."""
    rng = np.random.default_rng(4)
    docs = [Document(f"d{i}", f"text {i}", {}) for i in range(10)]
    for name in ("wv_r1", "wv_r2"):
        MilvusRetriever.create(client, name, docs, rng.normal(size=(10, DIM)).astype(np.float32), IndexSpec("flat"),
                               l2_normalize).close()
    point_alias(client, "wv_rel", "wv_r1")

    def opened(name):
        return MilvusRetriever(client, name, IndexSpec("flat"), DIM, DIM, l2_normalize,
                               unserved=lambda: alias_target(client, "wv_rel") not in (name, None))

    def state(name):
        return client.get_load_state(name)["state"].name

    old, late = opened("wv_r1"), opened("wv_r1")
    old.close()
    assert state("wv_r1") == "Loaded"  # still served: kept
    point_alias(client, "wv_rel", "wv_r2")
    opened("wv_r2").close()
    assert state("wv_r2") == "Loaded"
    old = opened("wv_r1")
    old.close()
    assert state("wv_r1") != "Loaded"
    query = l2_normalize(rng.normal(size=(1, DIM)).astype(np.float32))

    async def many():  # several searches of the lagging replica at once: one loads it, the others must not fail
        return await asyncio.gather(*[late.search(query, 3, SearchParams()) for _ in range(6)])

    assert all(len(hits[0]) == 3 for hits in asyncio.run(many())) and state("wv_r1") == "Loaded"
    client.release_collection("wv_r1")  # released again, mid-life: the next searches load it again
    assert all(len(hits[0]) == 3 for hits in asyncio.run(many()))
