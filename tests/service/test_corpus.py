"""Living corpora (issue 10): metadata filters, documents by id, versions listed and re-activated."""

import asyncio
import re
import time

import numpy as np
import pytest

from tests.conftest import ADMIN, demo_documents, rebuild, serving, slowed_encoder, wait_job
from whitevec.index.faiss_index import VectorIndex
from whitevec.index.spec import IndexSpec

pytestmark = pytest.mark.anyio


def corpus(n: int = 240) -> list[dict]:
    """Documents with mixed metadata types: strings, ints, bools, null, missing keys."""
    base = demo_documents(n_each=max(1, n // 24 + 1))[:n]
    for i, doc in enumerate(base):
        doc["metadata"] = {"topic": doc["metadata"]["topic"], "year": 2020 + i % 5, "flag": i % 3 == 0,
                           "lang": None if i % 7 == 0 else ("en" if i % 2 else "zh")}
        if i % 11 == 0:
            del doc["metadata"]["year"]
        if i % 13 == 0:
            doc["metadata"]["year"] = "2021"  # a string, never equal to the number 2021
        if i % 4 == 0:
            doc["metadata"]["tags"] = ["even", "four"] if i % 8 == 0 else ["even"]
        elif i % 4 == 1:
            doc["metadata"]["tags"] = ["odd"]
    return base


def matches(meta: dict, flt: dict) -> bool:
    from tests.index.test_filters import reference

    return reference(meta, flt)


FILTERS = [
    {"topic": "weather"},
    {"year": 2021},
    {"year": "2021"},
    {"flag": True},
    {"lang": None},
    {"year": {"$in": [2020, 2024]}, "lang": "en"},
    {"topic": {"$in": ["travel", "animals"]}, "flag": False, "year": 2022},
    {"topic": "nothing like this"},
    {"year": {"$gte": 2021, "$lt": 2023}, "flag": {"$ne": True}},
    {"year": {"$nin": [2020, 2021]}, "lang": {"$exists": True}},
    {"tags": "even"},
    {"tags": {"$in": ["odd", "none"]}, "lang": {"$ne": None}},
]


async def test_filtered_search_equals_brute_force_and_keeps_k(settings):
    docs = corpus()
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": docs})
        bundle = app.state.runtime.default.bundle
        by_id = {d["id"]: d for d in docs}
        for flt in FILTERS:
            for query in ("the weather tomorrow", "一只猫"):
                r = await client.post("/search", json={"query": query, "k": 10, "filter": flt})
                assert r.status_code == 200, r.text
                hits = r.json()["results"][0]["hits"]
                assert r.json()["warnings"] == [], flt
                allowed = [d for d in docs if matches(d["metadata"], flt)]
                assert len(hits) == min(10, len(allowed)), flt
                assert all(matches(by_id[h["id"]]["metadata"], flt) for h in hits)
                # brute force over the allowed documents with the served pipeline
                q = bundle.pipeline.postprocess(bundle.encoder.encode([query]).vectors)
                if allowed:
                    x = bundle.pipeline.postprocess(bundle.encoder.encode([d["text"] for d in allowed]).vectors)
                    want = np.sort(x @ q[0])[::-1][: len(hits)]
                    np.testing.assert_allclose([h["score"] for h in hits], want, atol=1e-4)


async def test_filters_are_validated(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": corpus(30)})
        for bad, said in [({"topic": ["a", "b"]}, 'use {"topic": {"$in": ["a", "b"]}}'),
                          ({"year": {"$gt": "2020"}}, 'filter key "year": $gt needs a number, got "2020"'),
                          ({"": "x"}, "filter keys are metadata keys"), ({'to"pic': "x"}, "double quote"),
                          ({"topic": {"$in": "x"}}, "$in needs a list of values"), ("topic", "filter: must be a JSON object"),
                          ({"year": {"$lte": 10**400}}, "$lte needs a finite number")]:
            r = await client.post("/search", json={"query": "x", "filter": bad})
            assert r.status_code == 422, (bad, r.text)
            message = r.json()["error"]["message"]
            assert said in message and "Value error" not in message and "filter: filter" not in message, message
        # a misspelt key and a quoted number answer (no hits) and say why
        r = await client.post("/search", json={"query": "x", "filter": {"yaer": 2021, "year": "2020"}})
        assert r.status_code == 200 and r.json()["results"][0]["hits"] == []
        assert r.json()["warnings"] == [
            'filter key "yaer": no document in collection "default" has this key; keys in use: flag, lang, tags, topic, year']
        r = await client.post("/search", json={"query": "x", "filter": {"year": {"$gt": 2**64}}})
        assert r.status_code == 200 and r.json()["results"][0]["hits"] == []  # beyond 64 bits: compared as a float
        r = await client.post("/search", json={"query": "x", "filter": {"flag": 1}})
        assert r.json()["warnings"] == ['filter key "flag": compared with a number, but documents have boolean values here']


async def test_validation_messages_are_sentences_about_the_field(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": corpus(30)})
        for body, said in [({"query": "   "}, "query: must contain a non-space character"),
                           ({"query": "x", "k": 0}, "k: must be at least 1"),
                           ({"query": "x", "k": "3"}, "k: must be a whole number"),
                           ({"query": 3}, "query: must be a string"),
                           ({"queries": ["a", ""]}, "queries.1: must not be empty"),
                           ({"query": "x", "extra": 1}, "extra: unknown field; remove it")]:
            r = await client.post("/search", json=body)
            assert r.status_code == 422, (body, r.text)
            message = r.json()["error"]["message"]
            assert said in message, message
            assert not any(w in message for w in ("nullable[", "union[", "pattern", "Input should")), message


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_filtered_equal_exact(kind):
    """search_rows on ivf/hnsw returns exactly the exact top-k among the rows, small sets and large."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:5] + 0.1 * rng.normal(size=(5, 16)).astype(np.float32)
    index = VectorIndex.build(x, IndexSpec(kind, nlist=64, nprobe=1) if kind == "ivf" else IndexSpec(kind, ef_search=8),
                              use_gpu=False)
    for size in (3, 50, 25_000):
        rows = rng.choice(len(x), size, replace=False)
        scores, ids = index.search_rows(q, 10, rows)
        exact = x[np.sort(rows)] @ q.T
        for j in range(len(q)):
            want = np.sort(exact[:, j])[::-1][: min(10, size)]
            assert set(ids[j]) <= set(rows.tolist()) and len(ids[j]) == min(10, size)
            if size <= 20_000:  # exact path
                np.testing.assert_allclose(scores[j], want, atol=1e-5)
            else:  # the selector pass: approximate, but full and only allowed rows
                assert (ids[j] >= 0).all()


async def test_get_document_by_id(settings):
    docs = corpus(30)
    docs[3]["metadata"]["nested"] = {"a": [1, "é"]}
    async with serving(settings) as (app, client):
        assert (await client.get("/admin/documents/x", headers=ADMIN)).status_code == 409  # no index yet
        await rebuild(client, {"documents": docs})
        r = await client.get(f"/admin/documents/{docs[3]['id']}", headers=ADMIN)
        assert r.status_code == 200
        got = r.json()
        assert (got["id"], got["text"], got["metadata"]) == (docs[3]["id"], docs[3]["text"], docs[3]["metadata"])
        r = await client.get("/admin/documents/no-such-doc", headers=ADMIN)
        assert r.status_code == 404 and "no-such-doc" in r.json()["error"]["message"]
        assert (await client.get(f"/admin/documents/{docs[3]['id']}")).status_code == 401


async def test_versions_list_activate_and_roll_back(settings):
    first, second = corpus(60)[:20], corpus(60)[20:]
    async with serving(settings) as (app, client):
        v1 = (await rebuild(client, {"documents": first}))["result"]["version"]
        v2 = (await rebuild(client, {"documents": second, "whitening": {"beta": 1.0, "gamma": 0.0, "dim": 8}}))["result"]["version"]
        listed = (await client.get("/admin/versions", headers=ADMIN)).json()
        assert listed["active"] == v2
        rows = {v["version"]: v for v in listed["versions"]}
        assert [v["version"] for v in listed["versions"]][:2] == [v2, v1]  # newest first
        assert rows[v2]["active"] and not rows[v1]["active"]
        for row in (rows[v1], rows[v2]):  # ISO 8601 in UTC, as jobs and keys show times
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row["created_at"]), row["created_at"]
            assert row["activated_at"] >= row["created_at"]
        assert rows[v1]["documents"] == len(first) and rows[v2]["documents"] == len(second)
        assert rows[v2]["whitening"]["beta"] == 1.0 and rows[v2]["whitening"]["output_dim"] == 8
        assert rows[v1]["index"]["type"] == "flat" and rows[v1]["model"]["engine"] in ("torch", "onnx")

        r = await client.post(f"/admin/versions/{v1}/activate", headers=ADMIN)
        assert r.status_code == 200 and r.json()["active"] == v1
        hit = (await client.post("/search", json={"query": first[0]["text"], "k": 1})).json()
        assert hit["version"] == v1 and hit["results"][0]["hits"][0]["id"] == first[0]["id"]
        assert (await client.post("/embed", json={"texts": ["x"]})).json()["dim"] != 8
        assert (await client.get("/admin/versions", headers=ADMIN)).json()["active"] == v1

        r = await client.post(f"/admin/versions/{v2}/activate", headers=ADMIN)  # and forward again
        assert r.status_code == 200
        assert (await client.post("/embed", json={"texts": ["x"]})).json()["dim"] == 8
        r = await client.post("/admin/versions/20990101T000000.000000-beef/activate", headers=ADMIN)
        assert r.status_code == 404 and "GET /admin/versions" in r.json()["error"]["message"]

        # a damaged version is refused with 409 and nothing changes
        folder = app.state.runtime.default.versions.folder(v1)
        (folder / "index.faiss").write_bytes(b"\x00" * 64)
        r = await client.post(f"/admin/versions/{v1}/activate", headers=ADMIN)
        assert r.status_code == 409 and "index.faiss" in r.json()["error"]["message"]
        assert (await client.get("/admin/versions", headers=ADMIN)).json()["active"] == v2
        assert (await client.post("/search", json={"query": "x", "k": 1})).json()["version"] == v2


async def test_a_replace_that_shrinks_the_corpus_needs_confirmation_and_merge_adds(settings):
    docs = corpus(40)
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": docs})
        few = [{"id": "new-1", "text": "a brand new document"}, {"id": docs[0]["id"], "text": "replaced text"}]
        r = await client.post("/admin/index/rebuild", json={"documents": few}, headers=ADMIN)
        assert r.status_code == 409
        message = r.json()["error"]["message"]
        assert f"the {len(docs)} served documents with 2" in message and "confirm_shrink" in message
        assert app.state.runtime.default.bundle.retriever.count() == len(docs)  # nothing changed

        job = await rebuild(client, {"documents": few, "mode": "merge"})
        assert job["state"] == "succeeded" and job["result"]["documents"] == len(docs) + 1
        got = (await client.get(f"/admin/documents/{docs[0]['id']}", headers=ADMIN)).json()
        assert got["text"] == "replaced text" and got["metadata"] == {}
        assert (await client.get("/admin/documents/new-1", headers=ADMIN)).status_code == 200
        assert (await client.get(f"/admin/documents/{docs[1]['id']}", headers=ADMIN)).json()["text"] == docs[1]["text"]
        hit = (await client.post("/search", json={"query": "a brand new document", "k": 1})).json()
        assert hit["results"][0]["hits"][0]["id"] == "new-1"

        job = await rebuild(client, {"documents": few, "confirm_shrink": True})
        assert job["state"] == "succeeded" and app.state.runtime.default.bundle.retriever.count() == 2


async def test_a_merge_without_whitening_keeps_the_served_whitening_and_says_so(settings):
    """The served version was built (or tuned) to beta 1, gamma 0, dim 8; the defaults say otherwise. A merge
    adds to what is served: it keeps that whitening (refitted on the merged corpus); a replace starts from the
    collection's default; the job result says which and why."""
    docs = corpus(40)
    settings = settings.model_copy(update={"whiten_beta": 0.0, "whiten_gamma": 0.0, "whiten_dim": None})
    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": docs, "whitening": {"beta": 1.0, "gamma": 0.0, "dim": 8}})
        assert first["result"]["whitening_from"].startswith("the request's")
        job = await rebuild(client, {"documents": [{"id": "new", "text": "a brand new document"},
                                                   {"id": "new-2", "text": "another one"}], "mode": "merge"})
        params = job["result"]["whitening"]["params"]
        assert (params["beta"], params["gamma"], params["dim"]) == (1.0, 0.0, 8), params
        assert job["result"]["whitening_from"].startswith(f"kept from the served version {first['result']['version']}")
        job = await rebuild(client, {"documents": docs, "confirm_shrink": True})
        params = job["result"]["whitening"]["params"]
        assert (params["beta"], params["gamma"], params["dim"]) == (0.0, 0.0, None), params
        assert job["result"]["whitening_from"].startswith("the collection's default")


async def test_rewhitening_without_reencoding_equals_a_full_rebuild(settings):
    """reencode: false refits whitening / rebuilds the index from the stored raw vectors: the model
    never runs, and the vectors equal those of a full rebuild with the same parameters."""
    import faiss

    docs = corpus(40)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        encoder = rt.default.bundle.encoder
        calls = []
        original = encoder.embed_tokens

        def counting(ids):
            calls.append(len(ids))
            return original(ids)

        encoder.embed_tokens = counting
        job = await rebuild(client, {"reencode": False, "whitening": {"beta": 1.0, "gamma": 1.0, "dim": 6}})
        assert job["state"] == "succeeded", job
        assert calls == [] and job["result"]["reencoded"] is False and job["result"]["documents"] == len(docs)
        fast = rt.default.versions.folder(job["result"]["version"])
        del encoder.embed_tokens
        job = await rebuild(client, {"documents": docs, "whitening": {"beta": 1.0, "gamma": 1.0, "dim": 6}})
        full = rt.default.versions.folder(job["result"]["version"])
        a, b = faiss.read_index(str(fast / "index.faiss")), faiss.read_index(str(full / "index.faiss"))
        np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-5)
        np.testing.assert_allclose(np.load(fast / "raw.npy"), np.load(full / "raw.npy"), atol=1e-6)

        # only the index type: whitening stays as served
        job = await rebuild(client, {"reencode": False, "index": {"type": "hnsw"}})
        row = (await client.get("/admin/versions", headers=ADMIN)).json()["versions"][0]
        assert row["whitening"]["beta"] == 1.0 and row["whitening"]["output_dim"] == 6
        assert row["index"]["type"] == "flat"  # below WHITEVEC_MIN_APPROX_VECTORS: flat, with a warning
        assert job["result"]["warnings"]

        r = await client.post("/admin/index/rebuild", json={"reencode": False, "documents": docs[:2]}, headers=ADMIN)
        assert r.status_code == 422 and "send no `documents`" in r.text
        (rt.default.versions.folder(rt.default.bundle.version) / "raw.npy").unlink()  # as a version from before raw vectors
        r = await client.post("/admin/index/rebuild", json={"reencode": False}, headers=ADMIN)
        assert r.status_code == 409 and "reencode: true" in r.json()["error"]["message"]


async def test_upsert_get_delete_round_trip_reads_your_writes(settings):
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        fit_before, built = rt.default.bundle.pipeline.whitening.meta()["version"], rt.default.bundle.version
        new = [{"id": "n1", "text": "a purple elephant plays the violin", "metadata": {"topic": "odd"}},
               {"id": docs[0]["id"], "text": "the weather was replaced by a submarine", "metadata": {"topic": "odd"}}]
        r = await client.post("/admin/documents", json={"documents": new}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["upserted"] == 2 and r.json()["version"] == rt.default.bundle.version == built  # logged, not rebuilt
        assert rt.default.versions.versions()[-1] == built
        assert rt.default.bundle.pipeline.whitening.meta()["version"] == fit_before  # transformed, not refitted
        assert rt.default.bundle.retriever.count() == len(docs) + 1
        hits = (await client.post("/search", json={"query": new[0]["text"], "k": 1})).json()["results"][0]["hits"]
        assert hits[0]["id"] == "n1" and hits[0]["score"] > 0.99
        got = (await client.get(f"/admin/documents/{docs[0]['id']}", headers=ADMIN)).json()
        assert got["text"] == new[1]["text"]
        odd = (await client.post("/search", json={"query": "x", "k": 10, "filter": {"topic": "odd"}})).json()
        assert sorted(h["id"] for h in odd["results"][0]["hits"]) == sorted(["n1", docs[0]["id"]])
        # the upserted vector equals the served pipeline's own for that text (no refit, same transform)
        want = rt.default.bundle.pipeline.postprocess(rt.default.bundle.encoder.encode([new[0]["text"]]).vectors)[0]
        np.testing.assert_allclose(hits[0]["score"], float(want @ want), atol=1e-4)

        r = await client.post("/admin/documents/delete", json={"ids": ["n1", "never-there", "n1"]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["deleted"] == 1 and r.json()["missing"] == ["never-there"]
        assert (await client.get("/admin/documents/n1", headers=ADMIN)).status_code == 404
        for query in (new[0]["text"], "violin", "elephant"):
            hits = (await client.post("/search", json={"query": query, "k": 100})).json()["results"][0]["hits"]
            assert "n1" not in {h["id"] for h in hits}  # no ghost hits
        same = (await client.post("/admin/documents/delete", json={"ids": ["n1"]}, headers=ADMIN)).json()
        assert same == {"deleted": 0, "missing": ["n1"], "version": rt.default.bundle.version}  # no new version

        for body, status in [({"documents": []}, 422), ({"ids": []}, 422)]:  # an id twice: see test_limits
            path = "/admin/documents/delete" if "ids" in body else "/admin/documents"
            assert (await client.post(path, json=body, headers=ADMIN)).status_code == status, body
        rt.settings.max_upsert = 1
        r = await client.post("/admin/documents", json={"documents": new}, headers=ADMIN)
        assert r.status_code == 422 and "WHITEVEC_MAX_UPSERT" in r.text
        everything = [d["id"] for d in (await client.post("/search", json={"query": "x", "k": 100})).json()[
            "results"][0]["hits"]]
        r = await client.post("/admin/documents/delete", json={"ids": everything}, headers=ADMIN)
        assert r.status_code == 409 and "at least 2" in r.text


async def test_concurrent_upserts_and_searches_never_fail(settings):
    import asyncio

    docs = corpus(30)
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": docs})

        async def searches():
            codes = []
            for i in range(60):
                r = await client.post("/search", json={"query": f"weather {i}", "k": 5})
                codes.append(r.status_code)
                await asyncio.sleep(0)
            return codes

        async def upserts():
            return [(await client.post("/admin/documents", json={"documents": [
                {"id": f"u{i}", "text": f"upserted text number {i}"}]}, headers=ADMIN)).status_code for i in range(8)]

        found, done = await asyncio.gather(searches(), upserts())
        assert set(found) == {200} and set(done) == {200}
        assert app.state.runtime.default.bundle.retriever.count() == len(docs) + 8


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)])
def test_an_upsert_that_returned_200_survives_kill_9(tmp_path, tiny_model_dir, backend):
    import httpx

    from tests.conftest import ADMIN_TOKEN, ServeProcess

    env = {"WHITEVEC_DATA_DIR": str(tmp_path / "data"), "WHITEVEC_ADMIN_TOKEN": ADMIN_TOKEN, "WHITEVEC_DEVICE": "cpu"}
    if backend == "milvus":  # embedded Milvus Lite in a file beside the data dir
        env.update({"WHITEVEC_INDEX_BACKEND": "milvus", "WHITEVEC_MILVUS_URI": str(tmp_path / "milvus.db")})
    server = ServeProcess(["--model", str(tiny_model_dir)], env)
    try:
        r = httpx.post(f"{server.base}/admin/index/rebuild", json={"documents": corpus(30)}, headers=ADMIN)
        job = r.json()["job_id"]
        for _ in range(300):
            if httpx.get(f"{server.base}/admin/jobs/{job}", headers=ADMIN).json()["state"] == "succeeded":
                break
        r = httpx.post(f"{server.base}/admin/documents", headers=ADMIN, timeout=60,
                       json={"documents": [{"id": "kept", "text": "a sentence that must survive"}]})
        assert r.status_code == 200
        r = httpx.post(f"{server.base}/admin/documents/delete", json={"ids": ["weather-0-0"]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["deleted"] == 1
        before = httpx.post(f"{server.base}/search", json={"query": "a sentence that must survive", "k": 5}).json()
        words = {"query": "survive", "k": 5, "mode": "lexical"}
        lexical = httpx.post(f"{server.base}/search", json=words).json() if backend == "faiss" else None
        server.proc.kill()  # kill -9, right after the 200s
        server.proc.wait()
    finally:
        server.stop()
    again = ServeProcess(["--model", str(tiny_model_dir)], env)
    try:
        after = httpx.post(f"{again.base}/search", json={"query": "a sentence that must survive", "k": 5}).json()
        assert after == before  # same version, same hits, same scores
        if lexical is not None:  # the lexical side replays the same log: the acknowledged upsert is there
            assert [h["id"] for h in lexical["results"][0]["hits"]] == ["kept"]
            assert httpx.post(f"{again.base}/search", json=words).json() == lexical
        assert httpx.get(f"{again.base}/admin/documents/kept", headers=ADMIN).status_code == 200
        assert httpx.get(f"{again.base}/admin/documents/weather-0-0", headers=ADMIN).status_code == 404
    finally:
        again.stop()


async def test_pending_changes_are_compacted_into_a_new_version_that_searches_the_same(settings):
    settings.compact_changes = 3  # and a quarter of the 30 built documents: compaction past 7 changes
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        built = (await rebuild(client, {"documents": docs}))["result"]["version"]
        answers = []
        for i in range(3):  # 3 changes each: 1 added, 1 built row replaced (gone + added)
            r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [
                {"id": f"c{i}", "text": f"compaction text {i}", "metadata": {"topic": "odd"}},
                {"id": docs[i]["id"], "text": f"replacement {i}"}]})
            answers.append(r.json()["version"])
        assert answers[:2] == [built, built] and answers[2] != built  # 6 changes logged, then 9 folded
        assert rt.default.bundle.version == answers[2] and rt.default.bundle.retriever.pending_changes() == 0
        folded = await client.post("/search", json={"query": "compaction replacement", "k": 10, "mode": "lexical"})
        assert {h["id"] for h in folded.json()["results"][0]["hits"]} == {"c0", "c1", "c2", *(d["id"] for d in docs[:3])}
        assert rt.default.bundle.retriever.count() == len(docs) + 3
        query = {"query": "compaction text 2", "k": 33, "filter": {"topic": {"$in": ["odd", "weather"]}}}
        after = (await client.post("/search", json=query)).json()["results"][0]["hits"]
        assert {h["id"] for h in after[:3]} == {f"c{i}" for i in range(3)}
        # the version before compaction is a rollback point holding the same corpus (built + its log)
        r = await client.post(f"/admin/versions/{built}/activate", headers=ADMIN)
        assert r.status_code == 200 and r.json()["documents"] == len(docs) + 3
        before = (await client.post("/search", json=query)).json()["results"][0]["hits"]
        def ranked(hits: list[dict]) -> list[tuple]:  # the tiny model ties some texts: order ties by id
            return sorted((-round(h["score"], 4), h["id"]) for h in hits)

        assert ranked(before) == ranked(after)
        row = {v["version"]: v for v in (await client.get("/admin/versions", headers=ADMIN)).json()["versions"]}
        assert row[built]["changes"] == {"added": 6, "gone": 3, "live_documents": len(docs) + 3}
        assert row[answers[2]]["changes"] == {"added": 0, "gone": 0, "live_documents": len(docs) + 3}


async def test_changes_made_while_a_rebuild_runs_carry_over_to_its_version(settings):
    from whitevec.index.build import build_version

    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        bundle = rt.default.bundle
        documents, raw, since = rt.default.corpus_changes.corpus(bundle, with_raw=True)  # what a rebuild job reads first
        r = await client.post("/admin/documents", headers=ADMIN,
                              json={"documents": [{"id": "during", "text": "written while the rebuild ran"}]})
        assert r.status_code == 200
        r = await client.post("/admin/documents/delete", json={"ids": [docs[5]["id"]]}, headers=ADMIN)
        assert r.json()["deleted"] == 1
        result = build_version(rt.default.versions, bundle.encoder, documents, bundle.pipeline.whitening.params,
                               bundle.retriever.spec, raw_vectors=raw)
        rt.default.activate(result.version, bundle.encoder, just_built=True, since=since)
        assert rt.default.bundle.version == result.version
        assert (await client.get("/admin/documents/during", headers=ADMIN)).status_code == 200
        assert (await client.get(f"/admin/documents/{docs[5]['id']}", headers=ADMIN)).status_code == 404
        assert rt.default.bundle.retriever.count() == len(docs)
        hits = (await client.post("/search", json={"query": "written while the rebuild ran", "k": 1})).json()
        assert hits["results"][0]["hits"][0]["id"] == "during"


async def test_a_version_with_a_damaged_change_log_is_refused(settings):
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        v1 = (await rebuild(client, {"documents": docs}))["result"]["version"]
        await client.post("/admin/documents", headers=ADMIN, json={"documents": [{"id": "z", "text": "logged"}]})
        v2 = (await rebuild(client, {"documents": docs}))["result"]["version"]
        import gc

        gc.collect()  # v1's bundle is gone: its log connection closes, checkpointing its WAL into the file
        for part in rt.default.versions.folder(v1).glob("changes.sqlite-*"):
            part.unlink()
        (rt.default.versions.folder(v1) / "changes.sqlite").write_bytes(b"garbage" * 1000)
        r = await client.post(f"/admin/versions/{v1}/activate", headers=ADMIN)
        assert r.status_code == 409 and "changes.sqlite" in r.json()["error"]["message"]
        assert rt.default.bundle.version == v2
        row = {v["version"]: v for v in (await client.get("/admin/versions", headers=ADMIN)).json()["versions"]}
        assert "damaged" in row[v1]["changes"]


async def test_rewhitening_to_gamma_0_restores_the_dim_a_gamma_fit_lowered(settings):
    """12 documents in 32 dims: γ = 1 serves 11 dims (the fit's rank); a later γ = 0 re-whitening
    without a dim goes back to the 32 asked for, not the lowered 11."""
    async with serving(settings) as (app, client):
        job = await rebuild(client, {"documents": demo_documents(), "whitening": {"beta": 1, "gamma": 1, "dim": 32}})
        assert job["result"]["whitening"]["output_dim"] == 11
        job = await rebuild(client, {"reencode": False, "whitening": {"beta": 0, "gamma": 0}})
        assert job["state"] == "succeeded", job
        assert job["result"]["whitening"]["output_dim"] == 32


async def test_a_dead_replicas_running_job_does_not_stop_compaction(settings):
    """Compaction waits for a job running in this process, not for a record another (dead) replica left."""
    import time as _time

    settings.compact_changes = 3
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        built = (await rebuild(client, {"documents": docs}))["result"]["version"]
        with rt.jobs._db.transaction() as execute:  # what a replica killed mid-job leaves behind
            execute("INSERT INTO jobs (id, kind, state, total, created_at, owner) VALUES "
                    "('dead', 'index.rebuild', 'running', 0, ?, 'replica-that-died')", (_time.time(),))
        for i in range(3):
            r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [
                {"id": f"c{i}", "text": f"compaction text {i}"}, {"id": docs[i]["id"], "text": f"replacement {i}"}]})
        assert r.json()["version"] != built and rt.default.bundle.retriever.pending_changes() == 0


async def test_a_large_upsert_to_one_collection_never_holds_up_another(settings):
    """Upserts are encoded through the batcher a chunk at a time and the writer thread only commits: a
    one-document upsert to b, sent while a 320-document upsert to a is being encoded, is acknowledged
    long before it (it used to wait for the whole of a's encoding)."""
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        for name in ("a", "b"):
            assert (await client.put(f"/admin/collections/{name}", headers=ADMIN, json={})).status_code == 201
            r = await client.post(f"/admin/collections/{name}/rebuild", headers=ADMIN,
                                  json={"documents": demo_documents()})
            assert (await wait_job(client, r.json()["job_id"]))["state"] == "succeeded"
        big = [{"id": f"big-{i}", "text": f"the cat sat on the mat {i}"} for i in range(320)]
        with slowed_encoder(app, 0.05):  # 10 model batches of 32: about half a second or more for a
            started = time.monotonic()
            large = asyncio.ensure_future(client.post("/admin/collections/a/documents", headers=ADMIN,
                                                      json={"documents": big}))
            await asyncio.sleep(0.1)  # a's encoding is under way
            small = await client.post("/admin/collections/b/documents", headers=ADMIN,
                                      json={"documents": [{"id": "one", "text": "rain in the city"}]})
            small_s = time.monotonic() - started
            assert small.status_code == 200 and not large.done(), "b waited for a's whole upsert"
            assert (await large).status_code == 200
            large_s = time.monotonic() - started
        assert small_s < large_s / 2, (small_s, large_s)
        assert (await client.get("/admin/collections/a/documents/big-319", headers=ADMIN)).status_code == 200
