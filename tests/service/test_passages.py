"""Collections with passages, through the real app: long documents split into passage rows at every rebuild
and upsert, hits grouped into k distinct documents (scores checked against the passages' own vectors),
filters per document, writes a document at a time, re-splitting when the setting changes, and the
refusals that name what to fix."""

from __future__ import annotations

import random
from urllib.parse import quote

import numpy as np
import pytest

from tests.conftest import ADMIN, serving, wait_job
from whitevec.index.passage_rows import HEAD, PART, SEP

pytestmark = pytest.mark.anyio


WORDS = ("the a cat dog sat on mat hello world search vector index model text good bad day sun rain is are was "
         "red blue green house car tree city river").split()
SETTING = {"max_tokens": 12, "overlap": 3}


def long_text(rng: random.Random, sentences: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "." for _ in range(sentences))


def documents(n: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"doc-{i}", "text": long_text(rng, rng.randint(1, 9)),
             "metadata": {"part": "even" if i % 2 == 0 else "odd", "n": i}} for i in range(n)]


async def make(client, name: str = "long", passages: dict | None = SETTING) -> str:
    r = await client.put(f"/admin/collections/{name}", headers=ADMIN, json={"passages": passages})
    assert r.status_code == 201, r.text
    return f"/admin/collections/{name}"


async def served_vectors(client, name: str, texts: list[str]) -> np.ndarray:
    r = await client.post(f"/collections/{name}/embed", json={"texts": texts})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], np.float64)


async def test_hits_are_k_distinct_documents_scored_by_their_best_passage(backend_settings):
    docs = documents()
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        job = await rebuild_named(client, admin, {"documents": docs})
        assert job["state"] == "succeeded", job
        result = job["result"]
        assert result["documents"] == len(docs) and result["passages"]["max_tokens"] == 12
        rows = app.state.runtime.collection("long").bundle.retriever.count()
        assert result["passages"]["rows"] == rows > len(docs)  # long documents became several rows
        listed = (await client.get(f"{admin}/versions", headers=ADMIN)).json()["versions"][0]
        assert listed["whitening"]["fitted_on"] == rows  # whitening fits on what is searched: the passages
        assert listed["changes"]["live_documents"] == len(docs)
        by_id = {d["id"]: d for d in docs}
        for query, flt in [("cat sat on the mat", None), ("river city", {"part": "odd"}),
                           ("blue car", {"n": {"$gte": 10}})]:
            r = await client.post("/collections/long/search", json={"query": query, "k": 5, "filter": flt})
            assert r.status_code == 200, r.text
            hits = r.json()["results"][0]["hits"]
            wanted = [d for d in docs if flt is None or all(
                (d["metadata"][key] == v if not isinstance(v, dict) else d["metadata"][key] >= v["$gte"])
                for key, v in flt.items())]
            assert len(hits) == min(5, len(wanted)) and len({h["id"] for h in hits}) == len(hits)
            assert {h["id"] for h in hits} <= {d["id"] for d in wanted}
            q = (await served_vectors(client, "long", [query]))[0]
            # reference: every matching document scored by its best passage, through /embed
            best = {}
            for d in wanted:
                got = (await client.get(f"{admin}/documents/{d['id']}", headers=ADMIN)).json()
                texts = [d["text"][p["start"]:p["end"]] for p in got["passages"]]
                best[d["id"]] = float((await served_vectors(client, "long", texts) @ q).max())
            expected = sorted(best.values(), reverse=True)[:len(hits)]
            assert [h["score"] for h in hits] == pytest.approx(expected, abs=1e-4)
            for h in hits:
                assert h["text"] == by_id[h["id"]]["text"] and h["metadata"] == by_id[h["id"]]["metadata"]
                assert h["passages"][0]["score"] == pytest.approx(h["score"], abs=1e-6)
                for p in h["passages"]:
                    assert 0 <= p["start"] < p["end"] <= len(h["text"])
                    assert h["text"][p["start"]:p["end"]].strip() == h["text"][p["start"]:p["end"]]
        raw = await client.post("/collections/long/search", json={"query": "cat", "k": 30, "group": "none"})
        ids = [h["id"] for h in raw.json()["results"][0]["hits"]]
        assert len(ids) == 30 and len(set(ids)) < 30  # passages: documents come back more than once
        mean = await client.post("/collections/long/search", json={"query": "cat", "k": 5, "group": "mean_top",
                                                                   "mean_top": 2})
        for h in mean.json()["results"][0]["hits"]:  # passages not among the candidates count 0
            held = len((await client.get(f"{admin}/documents/{h['id']}", headers=ADMIN)).json()["passages"])
            top = min(2, held)
            assert h["score"] == pytest.approx(sum(p["score"] for p in h["passages"][:top]) / top, abs=1e-5)


async def rebuild_named(client, admin: str, body: dict) -> dict:
    r = await client.post(f"{admin}/rebuild", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    return await wait_job(client, r.json()["job_id"])


async def test_lexical_and_hybrid_hits_point_at_the_passage_holding_the_words(settings):
    docs = documents()
    docs[3]["text"] = long_text(random.Random(9), 8) + " 今天 天气 不错."
    async with serving(settings) as (app, client):
        admin = await make(client)
        await rebuild_named(client, admin, {"documents": docs})
        for mode in ("lexical", "hybrid"):
            r = await client.post("/collections/long/search", json={"query": "今天 不错", "k": 3, "mode": mode})
            hit = r.json()["results"][0]["hits"][0]
            assert hit["id"] == "doc-3"
            if mode == "lexical":
                p = hit["passages"][0]
                assert "不错" in hit["text"][p["start"]:p["end"]]


async def test_upserts_and_deletes_replace_whole_documents(backend_settings):
    docs = documents(8)
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        await rebuild_named(client, admin, {"documents": docs})
        retriever = lambda: app.state.runtime.collection("long").bundle.retriever  # noqa: E731
        before = retriever().count()
        old = (await client.get(f"{admin}/documents/doc-1", headers=ADMIN)).json()
        new_text = long_text(random.Random(5), 12)
        r = await client.post(f"{admin}/documents", headers=ADMIN, json={"documents": [
            {"id": "doc-1", "text": new_text, "metadata": {"part": "new"}},
            {"id": "added", "text": "hello world. the sun is red.", "metadata": {"part": "new"}}]})
        assert r.status_code == 200, r.text
        got = (await client.get(f"{admin}/documents/doc-1", headers=ADMIN)).json()
        assert got["text"] == new_text and got["metadata"] == {"part": "new"}
        assert len(got["passages"]) > 1 and HEAD not in got["metadata"]
        for p in got["passages"]:
            assert new_text[p["start"]:p["end"]].strip()
        assert retriever().count() == before - len(old["passages"]) + len(got["passages"]) + 1
        summary = (await client.get(admin, headers=ADMIN)).json()
        assert summary["documents"] == 9
        hits = (await client.post("/collections/long/search", json={"query": new_text, "k": 9,
                                                                     "filter": {"part": "new"}})).json()
        assert {h["id"] for h in hits["results"][0]["hits"]} == {"doc-1", "added"}
        r = await client.post(f"{admin}/documents/delete", headers=ADMIN, json={"ids": ["doc-1", "nope"]})
        assert r.json()["deleted"] == 1 and r.json()["missing"] == ["nope"]
        assert retriever().count() == before - len(old["passages"]) + 1
        assert (await client.get(f"{admin}/documents/doc-1", headers=ADMIN)).status_code == 404
        assert (await client.get(admin, headers=ADMIN)).json()["documents"] == 8
        # a passage row's id is no document
        rows, _ = retriever().documents(None)
        row = next(r.id for r in rows if SEP in r.id)
        r = await client.get(f"{admin}/documents/{quote(row)}", headers=ADMIN)
        assert r.status_code == 404, r.text


async def test_a_half_written_document_is_read_as_its_last_whole_version(backend_settings):
    """What a backend that writes rows batch by batch (Milvus) leaves when it dies between them: the new
    passages without their head. Reads keep to the head's stamp: the old document, whole."""
    docs = documents(6)
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        await rebuild_named(client, admin, {"documents": docs})
        bundle = app.state.runtime.collection("long").bundle
        old = (await client.get(f"{admin}/documents/doc-2", headers=ADMIN)).json()
        query = {"query": docs[2]["text"], "k": 6}
        before = (await client.post("/collections/long/search", json=query)).json()
        rows = bundle.layout.rows([type(r)("doc-2", "cat cat cat. dog dog dog. " * 6, {})
                                   for r in [bundle.retriever.get("doc-2")]])
        partial = [r for r in rows if r.id != "doc-2"]  # everything but the head
        raw = bundle.encoder.encode([r.text for r in partial]).vectors
        bundle.retriever.change(partial, raw, [])
        assert (await client.get(f"{admin}/documents/doc-2", headers=ADMIN)).json() == old
        after = (await client.post("/collections/long/search", json=query)).json()
        assert after["results"] == before["results"]
        cat = (await client.post("/collections/long/search", json={"query": "cat cat cat", "k": 6,
                                                                    "group": "none"})).json()
        assert all(PART not in h["metadata"] for h in cat["results"][0]["hits"])
        assert all(h["text"] != rows[0].text for h in cat["results"][0]["hits"])


async def test_changing_the_setting_splits_anew_at_the_next_rebuild_and_says_so(backend_settings):
    docs = documents(10)
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        first = await rebuild_named(client, admin, {"documents": docs})
        rows = first["result"]["passages"]["rows"]
        same = await rebuild_named(client, admin, {"reencode": False, "whitening": {"beta": 0, "gamma": 0}})
        assert same["result"]["resplit"] == "split as the served version was"
        assert same["result"]["passages"]["rows"] == rows
        r = await client.patch(admin, headers=ADMIN, json={"passages": {"max_tokens": 40, "overlap": 0}})
        assert r.status_code == 200 and r.json()["next"] == "the next rebuild splits the documents anew"
        again = await rebuild_named(client, admin, {"reencode": False})
        assert again["state"] == "succeeded", again
        assert again["result"]["resplit"].startswith("split anew")
        assert again["result"]["passages"]["rows"] < rows and again["result"]["documents"] == len(docs)
        for d in docs:
            got = (await client.get(f"{admin}/documents/{d['id']}", headers=ADMIN)).json()
            assert got["text"] == d["text"]
        r = await client.patch(admin, headers=ADMIN, json={"passages": None})
        off = await rebuild_named(client, admin, {"reencode": False})
        assert off["result"]["passages"] is None and off["result"]["documents"] == len(docs)
        assert app.state.runtime.collection("long").bundle.retriever.count() == len(docs)
        hit = (await client.post("/collections/long/search", json={"query": "cat", "k": 1})).json()
        assert "passages" not in hit["results"][0]["hits"][0]


async def test_bad_settings_and_documents_are_refused_naming_the_fix(settings):
    async with serving(settings) as (app, client):
        r = await client.put("/admin/collections/toolong", headers=ADMIN, json={"passages": {"max_tokens": 100000}})
        assert r.status_code == 422 and "max length" in r.json()["error"]["message"]
        assert (await client.get("/admin/collections/toolong", headers=ADMIN)).status_code == 404
        r = await client.put("/admin/collections/over", headers=ADMIN,
                             json={"passages": {"max_tokens": 10, "overlap": 8}})
        assert r.status_code == 422 and "passages.overlap" in r.json()["error"]["message"]
        admin = await make(client)
        r = await client.patch(admin, headers=ADMIN, json={"passages": {"max_tokens": 2}})
        assert r.status_code == 422
        assert (await client.get(admin, headers=ADMIN)).json()["passages"] == SETTING  # unchanged
        for bad in [{"id": f"a{SEP}b", "text": "cat"}, {"id": "m", "text": "cat", "metadata": {HEAD: "x"}}]:
            r = await client.post(f"{admin}/rebuild", headers=ADMIN, json={"documents": [*documents(3), bad]})
            assert r.status_code == 422 and ("U+001F" in r.text or HEAD in r.text), r.text
        await rebuild_named(client, admin, {"documents": documents(4)})
        r = await client.post("/collections/long/search", json={"query": "cat", "filter": {PART: {"$exists": True}}})
        assert r.status_code == 422 and "whitevec's own" in r.json()["error"]["message"]
        r = await client.post("/collections/long/search", json={"query": "cat", "filter": {"nope": 1}})
        assert HEAD not in str(r.json()["warnings"]) and PART not in str(r.json()["warnings"])
        many = " ".join(["cat sat."] * 400)  # ~400 passages, each to carry 30 KB of metadata
        r = await client.post(f"{admin}/documents", headers=ADMIN, json={"documents": [
            {"id": "heavy", "text": many, "metadata": {"blob": "x" * 30_000}}]})
        assert r.status_code == 422 and "copied into each of its" in r.json()["error"]["message"], r.text
        for bad, what in [({"id": f"a{SEP}b", "text": "cat"}, "U+001F"),
                          ({"id": "m", "text": "cat", "metadata": {PART: 1}}, PART)]:
            r = await client.post(f"{admin}/documents", headers=ADMIN, json={"documents": [bad]})
            assert r.status_code == 422 and what in r.json()["error"]["message"], r.text
        huge = "cat sat on the mat. " * 250_000  # 5 MB
        r = await client.post(f"{admin}/documents", headers=ADMIN, json={"documents": [{"id": "big", "text": huge}]})
        assert r.status_code == 422 and "65535" in r.json()["error"]["message"], r.text  # the limit, named
        assert (await client.get(admin, headers=ADMIN)).json()["documents"] == 4


async def test_a_collection_without_passages_answers_as_before(settings):
    docs = documents(12)
    async with serving(settings) as (app, client):
        admin = await make(client, "plain", None)
        job = await rebuild_named(client, admin, {"documents": docs})
        assert "passages" not in job["result"] and "resplit" not in job["result"]
        assert app.state.runtime.collection("plain").bundle.retriever.count() == len(docs)
        hits = (await client.post("/collections/plain/search", json={"query": "cat", "k": 3})).json()
        assert set(hits["results"][0]["hits"][0]) == {"id", "score", "text", "metadata"}
        got = (await client.get(f"{admin}/documents/doc-1", headers=ADMIN)).json()
        assert set(got) == {"id", "text", "metadata", "version"}


async def test_changes_during_a_re_splitting_rebuild_carry_over_split_anew(backend_settings, monkeypatch):
    from tests.service.test_overlap import during_build

    docs = documents(10)
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        await rebuild_named(client, admin, {"documents": docs})
        await client.patch(admin, headers=ADMIN, json={"passages": {"max_tokens": 30, "overlap": 2}})
        text = long_text(random.Random(3), 10)

        def change() -> None:
            col = app.state.runtime.collection("long")
            col.corpus_changes.change_documents([type(col.bundle.retriever.get("doc-0"))("late", text, {"part": "x"})],
                                            ["doc-1"])
        during_build(monkeypatch, change)
        job = await rebuild_named(client, admin, {"reencode": False})
        assert job["state"] == "succeeded", job
        bundle = app.state.runtime.collection("long").bundle
        assert bundle.layout.setting.max_tokens == 30 and bundle.layout.count(bundle.retriever) == len(docs)
        got = (await client.get(f"{admin}/documents/late", headers=ADMIN)).json()
        assert got["text"] == text and len(got["passages"]) >= 2
        assert (await client.get(f"{admin}/documents/doc-1", headers=ADMIN)).status_code == 404


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)])
def test_a_multi_passage_upsert_and_delete_that_returned_200_survive_kill_9_whole(tmp_path, tiny_model_dir, backend):
    import httpx

    from tests.conftest import ADMIN_TOKEN, ServeProcess

    env = {"WHITEVEC_DATA_DIR": str(tmp_path / "data"), "WHITEVEC_ADMIN_TOKEN": ADMIN_TOKEN, "WHITEVEC_DEVICE": "cpu"}
    if backend == "milvus":
        env.update({"WHITEVEC_INDEX_BACKEND": "milvus", "WHITEVEC_MILVUS_URI": str(tmp_path / "milvus.db")})
    admin = "/admin/collections/long"
    text = long_text(random.Random(7), 14)
    server = ServeProcess(["--model", str(tiny_model_dir)], env)
    try:
        assert httpx.put(f"{server.base}{admin}", json={"passages": SETTING}, headers=ADMIN).status_code == 201
        job = httpx.post(f"{server.base}{admin}/rebuild", json={"documents": documents(12)}, headers=ADMIN).json()
        for _ in range(600):
            if httpx.get(f"{server.base}/admin/jobs/{job['job_id']}", headers=ADMIN).json()["state"] == "succeeded":
                break
        r = httpx.post(f"{server.base}{admin}/documents", headers=ADMIN, timeout=60,
                       json={"documents": [{"id": "doc-3", "text": text}, {"id": "new", "text": text[::-1]}]})
        assert r.status_code == 200, r.text
        r = httpx.post(f"{server.base}{admin}/documents/delete", json={"ids": ["doc-5"]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["deleted"] == 1
        before = {i: httpx.get(f"{server.base}{admin}/documents/{i}", headers=ADMIN).json() for i in ("doc-3", "new")}
        query = {"query": text, "k": 12}
        found = httpx.post(f"{server.base}/collections/long/search", json=query).json()
        server.proc.kill()  # kill -9, right after the 200s
        server.proc.wait()
    finally:
        server.stop()
    again = ServeProcess(["--model", str(tiny_model_dir)], env)
    try:
        for i, doc in before.items():
            assert httpx.get(f"{again.base}{admin}/documents/{i}", headers=ADMIN).json() == doc
        assert before["doc-3"]["text"] == text and len(before["doc-3"]["passages"]) > 2
        assert httpx.get(f"{again.base}{admin}/documents/doc-5", headers=ADMIN).status_code == 404
        assert httpx.post(f"{again.base}/collections/long/search", json=query).json() == found
        assert httpx.get(f"{again.base}{admin}", headers=ADMIN).json()["documents"] == 12
    finally:
        again.stop()


async def test_a_new_model_re_encodes_whole_documents_into_passages(backend_settings, tmp_path):
    import asyncio

    from tests.conftest import make_tiny_bert

    docs = documents(8)
    other = make_tiny_bert(tmp_path / "fine-tuned", seed=7)
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        first = await rebuild_named(client, admin, {"documents": docs})
        rt = app.state.runtime
        col = rt.collection("long")
        result = await asyncio.to_thread(rt.training.activate_model, None, col, other)
        assert result["documents"] == len(docs) and result["passages"]["rows"] == first["result"]["passages"]["rows"]
        assert col.bundle.encoder.model_dir == other.resolve()
        for d in docs:
            got = (await client.get(f"{admin}/documents/{d['id']}", headers=ADMIN)).json()
            assert got["text"] == d["text"] and got["metadata"] == d["metadata"]



async def test_changes_during_a_merge_carry_over_as_whole_documents_leaving_no_stray_rows(backend_settings,
                                                                                          monkeypatch):
    """A merge splits every document anew (new stamps): a change made meanwhile must replace the new rows of its
    document, not add its old rows beside them."""
    from tests.service.test_overlap import during_build

    docs = documents(10)
    async with serving(backend_settings) as (app, client):
        admin = await make(client)
        await rebuild_named(client, admin, {"documents": docs})
        text = long_text(random.Random(4), 9)

        def change() -> None:
            col = app.state.runtime.collection("long")
            doc = type(col.bundle.retriever.get("doc-0"))
            col.corpus_changes.change_documents([doc("doc-2", text, {"part": "x"})], ["doc-3"])
        during_build(monkeypatch, change)
        job = await rebuild_named(client, admin, {"documents": [{"id": "merged", "text": "hello world."},
                                                                {"id": "doc-4", "text": "the sun is red."}],
                                                  "mode": "merge"})
        assert job["state"] == "succeeded", job
        bundle = app.state.runtime.collection("long").bundle
        ids = ["merged"] + [d["id"] for d in docs if d["id"] != "doc-3"]
        rows = 0
        for i in ids:
            got = (await client.get(f"{admin}/documents/{i}", headers=ADMIN)).json()
            rows += len(got["passages"])
        assert (await client.get(f"{admin}/documents/merged", headers=ADMIN)).json()["text"] == "hello world."
        assert (await client.get(f"{admin}/documents/doc-2", headers=ADMIN)).json()["text"] == text
        assert (await client.get(f"{admin}/documents/doc-3", headers=ADMIN)).status_code == 404
        assert bundle.retriever.count() == rows  # every row belongs to a live document's current passages
        assert bundle.layout.count(bundle.retriever) == len(ids)
        versions = (await client.get(f"{admin}/versions", headers=ADMIN)).json()["versions"]
        older = next(v for v in versions if not v["served"])
        assert older["documents"] == len(docs) and older["changes"]["live_rows"] > len(docs)
