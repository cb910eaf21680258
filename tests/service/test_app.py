"""The app through httpx's ASGI transport with the tiny model: every endpoint and bad input."""

import asyncio
import json
import os
import re
import sqlite3
import threading

import numpy as np
import pytest

from whitevec.models.errors import WhitevecError
from whitevec.service.engine.admin_token import AdminToken

from tests.conftest import ADMIN, demo_documents, rebuild, serving, slowed_encoder, wait_job

pytestmark = pytest.mark.anyio


async def test_health_ready_and_embed_before_any_index(settings):
    async with serving(settings) as (app, client):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready["index"] == {"loaded": False, "type": None, "spec": None, "device": None, "count": 0,
                                  "pending_changes": 0}
        assert ready["status"] == "ready" and ready["model_source"] == "model folder tiny-bert0"
        assert "/" not in json.dumps({k: v for k, v in ready.items() if k != "model_source"})
        assert ready["dim"] == 32 and ready["pooling"] == "first-last-avg" and ready["version"] is None
        r = await client.post("/embed", json={"texts": ["hello world", "the cat"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dim"] == 32 and body["whitened"] is False and body["truncated"] == [False, False]
        np.testing.assert_allclose(np.linalg.norm(body["embeddings"], axis=1), 1, atol=1e-5)
        r = await client.post("/search", json={"query": "cat"})
        assert r.status_code == 409 and "/admin/index/rebuild" in r.json()["error"]["message"]
        r = await client.post("/embed", json={"texts": ["a"], "dim": 8})
        assert r.status_code == 409 and "build an index" in r.json()["error"]["message"]


async def test_rebuild_then_search_and_embed(settings):
    async with serving(settings) as (app, client):
        docs = demo_documents()
        job = await rebuild(client, {"documents": docs, "whitening": {"beta": 1, "gamma": 1, "dim": 8}})
        assert job["state"] == "succeeded", job
        assert job["progress"] == {"done": len(docs), "total": len(docs), "phase": "done"}
        assert job["result"]["documents"] == len(docs) and job["result"]["whitening"]["output_dim"] == 8
        assert job["started_at"] and job["finished_at"]
        ready = (await client.get("/readyz")).json()
        assert ready["index"] == {"loaded": True, "type": "flat", "spec": {"type": "flat"}, "device": "cpu",
                                  "count": len(docs), "pending_changes": 0}
        assert ready["dim"] == 8 and ready["version"] == job["result"]["version"]

        queries = [docs[5]["text"], docs[0]["text"]]
        r = await client.post("/search", json={"queries": queries, "k": 3})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [res["query"] for res in results] == queries
        for res, doc in zip(results, (docs[5], docs[0])):
            top = res["hits"][0]
            assert top["id"] == doc["id"] and top["text"] == doc["text"] and top["metadata"] == doc["metadata"]
            assert top["score"] == pytest.approx(1.0, abs=1e-4)
            scores = [h["score"] for h in res["hits"]]
            assert scores == sorted(scores, reverse=True) and len(scores) == 3
        single = (await client.post("/search", json={"query": queries[0], "k": 50})).json()["results"]
        assert len(single) == 1 and len(single[0]["hits"]) == len(docs)  # k above the corpus: all of it

        body = (await client.post("/embed", json={"texts": ["hello"]})).json()
        assert body["whitened"] is True and body["dim"] == 8 and body["version"] == job["result"]["version"]
        assert len((await client.post("/embed", json={"texts": ["hello"], "dim": 4})).json()["embeddings"][0]) == 4
        raw = (await client.post("/embed", json={"texts": ["hello"], "whiten": False, "normalize": False})).json()
        assert raw["dim"] == 32 and raw["whitened"] is False
        assert abs(np.linalg.norm(raw["embeddings"][0]) - 1) > 1e-3
        r = await client.post("/embed", json={"texts": ["hello"], "dim": 9})  # a conflict with the served version
        assert r.status_code == 409 and "dim 9" in r.json()["error"]["message"]


async def test_search_matches_exact_reference(settings, tiny_encoder):
    """Served scores equal the formula applied by hand: whiten with the saved fit, normalise, dot."""
    from whitevec.models.whitening import Whitening

    async with serving(settings) as (app, client):
        docs = demo_documents()
        job = await rebuild(client, {"documents": docs, "whitening": {"beta": 0.5, "gamma": 0.5, "dim": 10}})
        folder = settings.data_dir / "collections" / "default" / "versions" / job["result"]["version"]
        fit = Whitening.load(folder / "whitening.npz")
        raw = tiny_encoder.encode([d["text"] for d in docs] + ["a red car"]).vectors.astype(np.float64)
        x = fit.transform(raw)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        want = x[:-1] @ x[-1]
        hits = (await client.post("/search", json={"query": "a red car", "k": 5})).json()["results"][0]["hits"]
        order = np.argsort(-want)[:5]
        assert [h["id"] for h in hits] == [docs[i]["id"] for i in order]
        np.testing.assert_allclose([h["score"] for h in hits], want[order], atol=1e-4)


BAD_INPUT = [
    ("/embed", {"texts": []}, 422, "texts"),
    ("/embed", {"texts": [""]}, 422, "texts.0"),
    ("/embed", {"texts": ["   "]}, 422, "texts.0"),
    ("/embed", {"texts": "hello"}, 422, "texts"),
    ("/embed", {"texts": [1, 2]}, 422, "texts.0"),
    ("/embed", {"texts": ["a"], "whiten": "yes"}, 422, "whiten"),
    ("/embed", {"texts": ["a"], "colour": "red"}, 422, "unknown field"),
    ("/embed", {"texts": ["a"] * 9}, 422, "limit of 8"),
    ("/embed", {"texts": ["a" * 201]}, 422, "limit of 200"),
    ("/embed", {"texts": ["a"], "dim": 0}, 422, "dim"),
    ("/search", {"query": "a", "k": 0}, 422, "k"),
    ("/search", {"query": "a", "k": 101}, 422, "limit of 100"),
    ("/search", {"query": "a", "k": "3"}, 422, "k"),
    ("/search", {"query": "a", "queries": ["b"]}, 422, "exactly one"),
    ("/search", {"k": 3}, 422, "exactly one"),
    ("/search", {"queries": []}, 422, "queries"),
]


async def test_bad_input_is_a_clear_4xx(settings):
    settings.max_texts, settings.max_text_chars = 8, 200
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        for path, body, status, fragment in BAD_INPUT:  # one server: each case is one request
            r = await client.post(path, json=body)
            assert r.status_code == status, (path, body, r.text)
            error = r.json()["error"]
            assert fragment in error["message"] and error["type"] == "invalid_request", (path, body, error)


async def test_malformed_json_and_oversized_body(settings):
    settings.max_body_bytes = 2048
    async with serving(settings) as (app, client):
        r = await client.post("/embed", content=b'{"texts": ["a"', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = await client.post("/embed", json={"texts": ["x" * 3000]})
        assert r.status_code == 413 and "WHITEVEC_MAX_BODY_BYTES" in r.json()["error"]["message"]

        async def chunks():
            for _ in range(4):
                yield b" " * 1000
        r = await client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


BAD_REBUILDS = [
    ({"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}, {"id": "b", "text": "z"},
                    {"id": "b", "text": "w"}]}, "duplicate document ids: 'a', 'b'"),
    ({"documents": [{"id": "a", "text": "only one"}]}, "documents: give at least 2 items (got 1)"),
    ({"documents": [{"id": "a", "text": ""}, {"id": "b", "text": "y"}]}, "documents.0.text"),
    ({"documents": [{"id": "a", "text": "x", "tags": []}, {"id": "b", "text": "y"}]}, "unknown field"),
    ({"documents": demo_documents(), "whitening": {"dim": 999}}, "above the model's 32 dims"),
    ({"documents": demo_documents(), "whitening": {"beta": 2}}, "whitening.beta"),
    ({"documents": demo_documents(), "index": {"type": "annoy"}}, "index.type"),
    ({"documents": demo_documents(), "index": {"type": "ivf", "nlist": 500}}, "exceeds the 12 vectors"),
    ({"path": "x.jsonl", "documents": demo_documents()}, "exactly one"),
    ({}, "exactly one"),
]


async def test_bad_rebuild_requests(settings):
    settings.min_approx_vectors = 2  # so ivf parameters are checked on this small corpus
    async with serving(settings) as (app, client):
        for body, fragment in BAD_REBUILDS:
            r = await client.post("/admin/index/rebuild", json=body, headers=ADMIN)
            assert r.status_code == 422, (body, r.text)
            assert fragment in r.json()["error"]["message"], (body, r.text)
        assert (await client.get("/admin/jobs", headers=ADMIN)).json() == []


async def test_admin_auth(settings):
    async with serving(settings) as (app, client):
        r = await client.get("/admin/jobs")
        assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
        r = await client.get("/admin/jobs", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "wrong" in r.json()["error"]["message"]  # no valid credential
        r = await client.post("/admin/index/rebuild", json={"documents": demo_documents()},
                              headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        assert (await client.get("/admin/jobs", headers=ADMIN)).status_code == 200
        r = await client.get("/admin/jobs/deadbeef", headers=ADMIN)
        assert r.status_code == 404 and "deadbeef" in r.json()["error"]["message"]


async def test_generated_admin_token_is_kept_in_the_data_dir_and_rotates_live(settings):
    settings.admin_token = None
    async with serving(settings) as (app, client):
        token = app.state.runtime.admin_token
        path = settings.data_dir / "admin_token"
        assert app.state.runtime.token.created and len(token) >= 24
        assert path.read_text().strip() == token and (path.stat().st_mode & 0o777) == 0o600
        assert (await client.get("/admin/jobs")).status_code == 401
        assert (await client.get("/admin/jobs", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        new = AdminToken(None, settings.data_dir).rotate()  # what `whitevec token --rotate` does
        assert new != token and (path.stat().st_mode & 0o777) == 0o600
        assert (await client.get("/admin/jobs", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        assert (await client.get("/admin/jobs", headers={"Authorization": f"Bearer {new}"})).status_code == 200
        path.write_text("")  # damaged while serving: the last good token still opens /admin
        assert (await client.get("/admin/jobs", headers={"Authorization": f"Bearer {new}"})).status_code == 200
    path.write_text(new + "\n")
    async with serving(settings) as (app, client):  # a restart reuses the stored token
        assert app.state.runtime.admin_token == new and not app.state.runtime.token.created
    path.write_text("  \n")
    with pytest.raises(WhitevecError, match="whitevec token --rotate"):
        AdminToken(None, settings.data_dir).current()


async def test_rebuild_from_import_folder_and_path_refusal(settings, tmp_path):
    async with serving(settings) as (app, client):
        imports = settings.import_dir
        (imports / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in demo_documents()) + "\n")
        outside = tmp_path / "secret.jsonl"
        outside.write_text((imports / "docs.jsonl").read_text())
        os.symlink(outside, imports / "link.jsonl")
        (imports / "bad.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
        for path, status, fragment in [("../secret.jsonl", 422, "outside the import folder"),
                                       (str(outside), 422, "outside the import folder"),
                                       ("link.jsonl", 422, "outside the import folder"),
                                       ("missing.jsonl", 404, "not a file"),
                                       ("bad.jsonl", 422, "bad.jsonl:2: not valid JSON")]:
            r = await client.post("/admin/index/rebuild", json={"path": path}, headers=ADMIN)
            assert r.status_code == status and fragment in r.json()["error"]["message"], (path, r.text)
        job = await rebuild(client, {"path": "docs.jsonl", "index": {"type": "hnsw"}})
        # 12 documents are far below WHITEVEC_MIN_APPROX_VECTORS: exact search, said in the warnings
        assert job["state"] == "succeeded" and job["result"]["index"]["spec"]["type"] == "flat"
        assert any("built a flat (exact) index instead of hnsw" in w for w in job["result"]["warnings"])
        assert (await client.get("/readyz")).json()["index"]["type"] == "flat"


async def test_searches_during_a_rebuild_all_succeed(settings):
    """The rebuild is held inside its encoding (an event), so the searches provably overlap it."""
    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": demo_documents()})
        encoder = app.state.runtime.default.bundle.encoder
        original, inside, release = encoder.embed_tokens, threading.Event(), threading.Event()

        def held(ids):
            if threading.current_thread().name.startswith("whitevec-jobs"):
                inside.set()
                release.wait(30)
            return original(ids)

        encoder.embed_tokens = held
        r = await client.post("/admin/index/rebuild", json={"documents": demo_documents(n_each=2)}, headers=ADMIN)
        job_id = r.json()["job_id"]
        assert await asyncio.to_thread(inside.wait, 30)
        queries = [f"the cat {i}" for i in range(20)]
        answers = await asyncio.gather(*[client.post("/search", json={"query": q, "k": 2}) for q in queries])
        assert [a.status_code for a in answers] == [200] * 20
        assert {a.json()["version"] for a in answers} == {first["result"]["version"]}
        assert [a.json()["results"][0]["query"] for a in answers] == queries
        assert (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()["state"] == "running"
        release.set()
        job = await wait_job(client, job_id)
        del encoder.embed_tokens
        assert job["state"] == "succeeded"
        after = (await client.post("/search", json={"query": "the cat", "k": 2})).json()
        assert after["version"] == job["result"]["version"] != first["result"]["version"]


async def test_exception_mid_rebuild_leaves_old_version_serving(settings, monkeypatch):
    import whitevec.index.target

    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": demo_documents()})
        before = (await client.post("/search", json={"query": "rain", "k": 3})).json()

        def boom(*args, **kwargs):
            raise RuntimeError("disk on fire")
        monkeypatch.setattr(whitevec.index.target.VectorIndex, "build", boom)
        job = await rebuild(client, {"documents": demo_documents(n_each=2)})
        assert job["state"] == "failed" and "disk on fire" in job["error"]
        after = (await client.post("/search", json={"query": "rain", "k": 3})).json()
        assert after == before and after["version"] == first["result"]["version"]
        root = settings.data_dir / "collections" / "default" / "versions"
        assert sorted(p.name for p in root.iterdir() if p.name != ".lock") == sorted([first["result"]["version"], "ACTIVE"])


async def test_a_shutdown_during_a_rebuild_interrupts_it_and_the_next_start_says_so(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        big = (await client.post("/admin/index/rebuild", json={"documents": demo_documents(n_each=400)},
                                 headers=ADMIN)).json()["job_id"]
        while (await client.get(f"/admin/jobs/{big}", headers=ADMIN)).json()["state"] != "running":
            await asyncio.sleep(0.01)
    async with serving(settings) as (app, client):  # the server was stopped (Ctrl-C) and started again
        job = (await client.get(f"/admin/jobs/{big}", headers=ADMIN)).json()
        assert job["state"] == "interrupted" and "the server was shut down at" in job["error"], job
        assert "cancelled on request" not in job["error"]


async def test_cancel_running_and_queued_jobs(settings):
    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": demo_documents()})
        big = (await client.post("/admin/index/rebuild", json={"documents": demo_documents(n_each=400)},
                                 headers=ADMIN)).json()["job_id"]
        queued = (await client.post("/admin/index/rebuild", json={"documents": demo_documents()},
                                    headers=ADMIN)).json()["job_id"]
        while (await client.get(f"/admin/jobs/{big}", headers=ADMIN)).json()["state"] != "running":
            await asyncio.sleep(0.01)
        r = await client.post(f"/admin/jobs/{queued}/cancel", headers=ADMIN)
        assert r.status_code == 200
        r = await client.post(f"/admin/jobs/{big}/cancel", headers=ADMIN)
        assert r.status_code == 200
        assert (await wait_job(client, big))["state"] == "cancelled"
        assert (await wait_job(client, queued))["state"] == "cancelled"
        r = await client.post(f"/admin/jobs/{big}/cancel", headers=ADMIN)
        assert r.status_code == 409 and "already cancelled" in r.json()["error"]["message"]
        ready = (await client.get("/readyz")).json()
        assert ready["version"] == first["result"]["version"] and ready["index"]["count"] == 12


async def test_restart_serves_the_same_results_and_keeps_jobs(settings):
    async with serving(settings) as (app, client):
        job = await rebuild(client, {"documents": demo_documents(), "index": {"type": "flat"}})
        before = (await client.post("/search", json={"queries": ["the cat", "雨"], "k": 4})).json()
        emb = (await client.post("/embed", json={"texts": ["hello"]})).json()
    # A job left `running` by a crash is reported interrupted after the restart.
    with sqlite3.connect(settings.data_dir / "jobs.sqlite") as db:
        db.execute("INSERT INTO jobs (id, kind, state, created_at) VALUES ('crashed', 'index.rebuild', 'running', 0)")
    async with serving(settings) as (app, client):
        assert (await client.post("/search", json={"queries": ["the cat", "雨"], "k": 4})).json() == before
        assert (await client.post("/embed", json={"texts": ["hello"]})).json() == emb
        jobs = {j["id"]: j for j in (await client.get("/admin/jobs", headers=ADMIN)).json()}
        assert jobs[job["id"]]["state"] == "succeeded"
        assert jobs["crashed"]["state"] == "interrupted" and "while this job was running" in jobs["crashed"]["error"]


async def test_crash_leftovers_are_cleaned_and_previous_version_served(settings):
    async with serving(settings) as (app, client):
        job = await rebuild(client, {"documents": demo_documents()})
    root = settings.data_dir / "collections" / "default" / "versions"
    partial = root / ".tmp-20990101T000000-abcdef"
    partial.mkdir()
    (partial / "index.faiss").write_bytes(b"half written")
    (root / "ACTIVE.tmp").write_text('{"version": "20990101T0')
    async with serving(settings) as (app, client):
        assert (await client.get("/readyz")).json()["version"] == job["result"]["version"]
        assert not partial.exists() and not (root / "ACTIVE.tmp").exists()


async def test_old_versions_are_pruned(settings):
    settings.keep_versions = 2
    async with serving(settings) as (app, client):
        done = [await rebuild(client, {"documents": demo_documents()}) for _ in range(3)]
        kept = sorted(p.name for p in (settings.data_dir / "collections" / "default" / "versions").iterdir() if p.is_dir())
        assert kept == sorted(j["result"]["version"] for j in done[1:])
        assert (await client.get("/readyz")).json()["version"] == done[-1]["result"]["version"]


async def test_queue_full_answers_429_with_retry_after(settings):
    settings.max_queue_tokens = 8  # "hello world" is 3 tokens: two requests fit, the rest wait
    async with serving(settings) as (app, client):
        with slowed_encoder(app, 0.2):
            rs = await asyncio.gather(*[client.post("/embed", json={"texts": ["hello world"]}) for _ in range(12)])
        codes = [r.status_code for r in rs]
        assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
        rejected = next(r for r in rs if r.status_code == 429)
        assert rejected.headers["retry-after"] == "1" and "retry" in rejected.json()["error"]["message"]
        assert app.state.runtime.batcher.pending == 0


async def test_metrics(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        await client.post("/search", json={"query": "cat"})
        await client.post("/embed", json={"texts": []})
        text = (await client.get("/metrics")).text
        assert 'whitevec_requests_total{method="POST",route="/search",status="200"} 1.0' in text
        assert 'whitevec_requests_total{method="POST",route="/embed",status="422"} 1.0' in text
        assert "whitevec_request_duration_seconds_bucket" in text and "whitevec_batch_size_count" in text
        assert 'whitevec_index_vectors{collection="default"} 12.0' in text and "whitevec_queue_depth 0.0" in text
        assert 'whitevec_jobs{state="succeeded"} 1.0' in text
        tokens = {kind: float(v) for kind, v in re.findall(r'whitevec_batch_tokens_total\{kind="(\w+)"\} (\S+)', text)}
        assert 0 < tokens["text"] <= tokens["padded"], tokens  # the rebuild's and the query's batches


async def test_openapi_declares_errors_and_examples(settings):
    async with serving(settings) as (app, client):
        spec = (await client.get("/openapi.json")).json()
        search = spec["paths"]["/search"]["post"]["responses"]
        assert {"200", "409", "422", "429", "503"} <= search.keys()
        assert "202" in spec["paths"]["/admin/index/rebuild"]["post"]["responses"]
        assert spec["components"]["schemas"]["EmbedRequest"]["examples"]
