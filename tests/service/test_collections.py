"""Collections: many corpora per server, each with its own whitening, index, versions; one model loaded."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import ADMIN, demo_documents, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio


def english(n: int = 2) -> list[dict]:
    return [dict(d, id="en-" + d["id"]) for d in demo_documents(n) if d["text"].isascii()]


def chinese(n: int = 6) -> list[dict]:
    return [dict(d, id="zh-" + d["id"]) for d in demo_documents(n) if not d["text"].isascii()]


async def build_in(client, name: str, body: dict) -> dict:
    r = await client.post(f"/admin/collections/{name}/rebuild", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    job = await wait_job(client, r.json()["job_id"])
    assert job["state"] == "succeeded", job
    return job


async def test_create_list_get_and_delete_a_collection(settings):
    async with serving(settings) as (app, client):
        r = await client.put("/admin/collections/faq", json={"whitening": {"beta": 1, "gamma": 1, "dim": 8}},
                             headers=ADMIN)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["name"] == "faq" and made["documents"] == 0 and made["whitening"]["dim"] == 8
        assert made["model"] and made["index"]["type"] == "flat"
        r = await client.put("/admin/collections/faq", json={}, headers=ADMIN)
        assert r.status_code == 409 and "exists already" in r.json()["error"]["message"]
        for bad in ("Faq", "-x", "a" * 64, "a.b", "ü", "faq%0A", "x%00"):
            r = await client.put(f"/admin/collections/{bad}", json={}, headers=ADMIN)
            assert r.status_code == 422, (bad, r.text)
            assert "lowercase letters" in r.json()["error"]["message"]
        r = await client.put("/admin/collections/x", json={"model": "../etc"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["param"] == "model"
        r = await client.put("/admin/collections/x", json={"model": "nope"}, headers=ADMIN)
        assert r.status_code == 404 and "models/" in r.json()["error"]["message"]
        assert app.state.runtime.collection("x") is None  # a refused create leaves nothing behind

        listed = (await client.get("/admin/collections", headers=ADMIN)).json()["collections"]
        assert [c["name"] for c in listed] == ["default", "faq"]
        assert set(listed[1]) == {"name", "model", "documents", "active_version", "dim", "created_at", "passages"}
        one = (await client.get("/admin/collections/faq", headers=ADMIN)).json()
        assert one["whitening"] == {"beta": 1.0, "gamma": 1.0, "dim": 8} and one["active_version"] is None
        assert (await client.get("/admin/collections/nope", headers=ADMIN)).status_code == 404

        # the collection's whitening is its rebuilds' default
        job = await build_in(client, "faq", {"documents": english()})
        assert job["collection"] == "faq" and job["result"]["whitening"]["output_dim"] == 8
        r = await client.delete("/admin/collections/faq", headers=ADMIN)
        assert r.status_code == 409 and f"holds {len(english())} documents" in r.json()["error"]["message"]
        assert (await client.delete("/admin/collections/default?confirm=true", headers=ADMIN)).status_code == 409
        r = await client.delete("/admin/collections/faq?confirm=true", headers=ADMIN)
        assert r.json() == {"deleted": "faq", "documents": len(english())}
        assert not (settings.data_dir / "collections" / "faq").exists()
        assert (await client.post("/collections/faq/search", json={"query": "x"})).status_code == 404
        r = await client.delete("/admin/collections/faq?confirm=true", headers=ADMIN)
        assert r.status_code == 404  # a second delete: gone already
        # the name is free again, and the new one starts empty; a PUT needs no body
        r = await client.put("/admin/collections/faq", headers=ADMIN)
        assert r.status_code == 201 and r.json()["documents"] == 0
        # any bearer is fine while the server has no API key and no access key (OpenAI SDKs always send one)
        assert (await client.post("/collections/faq/embed", json={"texts": ["x"]},
                                  headers={"Authorization": "Bearer anything"})).status_code == 200


async def test_deleting_a_collection_stops_its_running_job_and_a_new_one_of_that_name_is_empty(settings):
    from tests.conftest import slowed_encoder

    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": english()})
        assert (await client.put("/admin/collections/busy", json={}, headers=ADMIN)).status_code == 201
        with slowed_encoder(app, 0.3):  # the encoder every collection shares
            r = await client.post("/admin/collections/busy/rebuild", json={"documents": chinese()}, headers=ADMIN)
            job_id = r.json()["job_id"]
            deleted = await client.delete("/admin/collections/busy?confirm=true", headers=ADMIN)
            assert deleted.status_code == 200
            job = await wait_job(client, job_id)
        assert job["state"] in ("cancelled", "failed") and job["collection"] == "busy"
        assert (await client.put("/admin/collections/busy", json={}, headers=ADMIN)).status_code == 201
        listed = (await client.get("/admin/collections/busy", headers=ADMIN)).json()
        assert listed["documents"] == 0 and listed["active_version"] is None
        assert list((settings.data_dir / "collections" / "busy" / "versions").glob("2*")) == []


async def test_collections_keep_their_own_corpus_whitening_and_versions(settings):
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": english()})
        for name in ("zh", "other"):
            assert (await client.put(f"/admin/collections/{name}", json={}, headers=ADMIN)).status_code == 201
        assert len(rt.encoders) == 1  # three collections, one model loaded
        assert rt.collection("zh").bundle.encoder is rt.default.bundle.encoder
        r = await client.post("/collections/zh/search", json={"query": "x"})
        assert r.status_code == 409 and "/admin/collections/zh/rebuild" in r.json()["error"]["message"]
        first = await build_in(client, "zh", {"documents": chinese(), "whitening": {"beta": 1, "gamma": 0, "dim": 6}})
        assert rt.collection("zh").bundle.encoder is rt.default.bundle.encoder  # still one model

        hits = (await client.post("/collections/zh/search", json={"query": "天气", "k": 50})).json()
        assert hits["version"] == first["result"]["version"]
        assert {h["id"][:3] for h in hits["results"][0]["hits"]} == {"zh-"}  # never the default's documents
        hits = (await client.post("/search", json={"query": "weather", "k": 50})).json()
        assert {h["id"][:3] for h in hits["results"][0]["hits"]} == {"en-"}
        assert (await client.post("/collections/zh/embed", json={"texts": ["x"]})).json()["dim"] == 6
        assert (await client.post("/embed", json={"texts": ["x"]})).json()["dim"] == 32
        assert (await client.post("/collections/other/embed", json={"texts": ["x"]})).json()["whitened"] is False

        # documents, versions and activation act on one collection only
        r = await client.post("/admin/collections/zh/documents", json={"documents": [
            {"id": "zh-new", "text": "新的文档"}]}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["upserted"] == 1
        assert (await client.get("/admin/collections/zh/documents/zh-new", headers=ADMIN)).json()["text"] == "新的文档"
        assert (await client.get("/admin/documents/zh-new", headers=ADMIN)).status_code == 404
        second = await build_in(client, "zh", {"documents": chinese(), "whitening": {"dim": 4}})
        listed = (await client.get("/admin/collections/zh/versions", headers=ADMIN)).json()
        assert listed["active"] == second["result"]["version"] and len(listed["versions"]) == 2
        default_before = (await client.get("/admin/versions", headers=ADMIN)).json()
        r = await client.post(f"/admin/collections/zh/versions/{first['result']['version']}/activate", headers=ADMIN)
        assert r.status_code == 200 and r.json()["active"] == first["result"]["version"]
        assert (await client.post("/collections/zh/embed", json={"texts": ["x"]})).json()["dim"] == 6
        assert (await client.get("/admin/versions", headers=ADMIN)).json() == default_before
        r = await client.post(f"/admin/collections/other/versions/{first['result']['version']}/activate",
                              headers=ADMIN)
        assert r.status_code == 404 and "/admin/collections/other/versions" in r.json()["error"]["message"]

        # jobs carry their collection and filter by it
        zh_jobs = (await client.get("/admin/jobs?collection=zh", headers=ADMIN)).json()
        assert {j["collection"] for j in zh_jobs} == {"zh"} and len(zh_jobs) == 2
        assert {j["collection"] for j in (await client.get("/admin/jobs", headers=ADMIN)).json()} == {"default", "zh"}

        # /readyz and /metrics per collection; /v1 selects a collection's model by its name
        ready = (await client.get("/readyz")).json()
        served = len(chinese()) + 1  # the first version again, with the document upserted to it
        assert ready["collections"]["zh"]["documents"] == served
        assert ready["collections"]["zh"]["active_version"] == first["result"]["version"]
        assert ready["models_loaded"] == 1 and ready["version"] == default_before["active"]
        text = (await client.get("/metrics")).text
        assert f'whitevec_index_vectors{{collection="zh"}} {float(served)}' in text
        r = await client.post("/v1/embeddings", json={"input": "x", "model": "zh"})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 6
        r = await client.post("/v1/embeddings", json={"input": "x", "model": "whitevec"})
        assert len(r.json()["data"][0]["embedding"]) == 32
        assert (await client.post("/v1/embeddings", json={"input": "x", "model": "nope"})).status_code == 404
        assert {"zh", "other", "whitevec"} <= {m["id"] for m in (await client.get("/v1/models")).json()["data"]}

    # a restart serves every collection as it was
    async with serving(settings) as (app, client):
        assert (await client.post("/collections/zh/embed", json={"texts": ["x"]})).json()["dim"] == 6
        assert [c["name"] for c in (await client.get("/admin/collections", headers=ADMIN)).json()["collections"]] \
            == ["default", "other", "zh"]
        assert len(app.state.runtime.encoders) == 1


async def test_an_existing_data_dir_upgrades_in_place(settings):
    """A data dir laid out before collections (versions/ at its root, jobs without a collection column)
    becomes the collection `default`; a crash before the upgrade's one rename leaves the old layout,
    which the next start upgrades."""
    import sqlite3

    async with serving(settings) as (app, client):
        built = (await rebuild(client, {"documents": english()}))["result"]["version"]
        answer = (await client.post("/search", json={"query": "weather", "k": 3})).json()
    data = settings.data_dir
    # the layout of the release before collections: the same version folders, one level up
    os.rename(data / "collections" / "default" / "versions", data / "versions")
    shutil.rmtree(data / "collections")
    with sqlite3.connect(data / "jobs.sqlite") as db:
        db.execute("ALTER TABLE jobs DROP COLUMN collection")

    from whitevec.index import layout

    real_rename = os.rename

    def crash(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    layout.os.rename = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            layout.upgrade(data)
    finally:
        layout.os.rename = real_rename
    assert (data / "versions" / built).is_dir()  # the old layout, whole

    async with serving(settings) as (app, client):
        assert not (data / "versions").exists() and (data / "collections" / "default" / "versions" / built).is_dir()
        assert (await client.post("/search", json={"query": "weather", "k": 3})).json() == answer
        jobs = (await client.get("/admin/jobs?collection=default", headers=ADMIN)).json()
        assert jobs and jobs[0]["collection"] == "default"  # jobs from before collections are default's
        listed = (await client.get("/admin/collections", headers=ADMIN)).json()["collections"]
        assert listed[0]["name"] == "default" and listed[0]["active_version"] == built

    # both layouts at once (a copy put back by hand): refused with what to do, nothing moved
    (data / "versions").mkdir()
    from whitevec.models.errors import WhitevecError

    with pytest.raises(WhitevecError, match="move one of them away"):
        layout.upgrade(data)


async def test_a_crash_mid_create_or_delete_leaves_no_half_collection(settings):
    from whitevec.service.engine.runtime import Runtime

    async with serving(settings) as (app, client):
        assert (await client.put("/admin/collections/gone", json={}, headers=ADMIN)).status_code == 201
        await build_in(client, "gone", {"documents": english()})
    root = settings.data_dir / "collections"
    # a delete killed after its rename, a create killed before its rename
    os.rename(root / "gone", root / ".deleting-gone-abc123")
    (root / ".tmp-half-abc123" / "versions").mkdir(parents=True)
    rt = Runtime(settings)
    rt.open()
    assert [c.name for c in rt.collections()] == ["default"]
    assert sorted(p.name for p in root.iterdir()) == ["default"]
    rt.unlock()


async def test_a_damaged_collection_file_is_reported_not_silently_defaulted(settings):
    """collection.json garbage or missing: the collection still serves its versions, but /readyz says its
    stored settings are unknown (degraded, naming the file), and a sync never takes it for deleted."""
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        r = await client.put("/admin/collections/a", headers=ADMIN, json={"whitening": {"beta": 0, "gamma": 0}})
        assert r.status_code == 201
        r = await client.post("/admin/collections/a/rebuild", headers=ADMIN, json={"documents": demo_documents()})
        assert (await wait_job(client, r.json()["job_id"]))["state"] == "succeeded"
    config = settings.data_dir / "collections" / "a" / "collection.json"
    for damage in ("garbage", "missing"):
        config.write_text("{not json") if damage == "garbage" else config.unlink()
        async with serving(settings) as (app, client):
            ready = (await client.get("/readyz", headers=ADMIN)).json()
            assert ready["status"] == "degraded" and ready["collections"]["a"]["status"] == "degraded"
            assert "collections/a/collection.json is " in ready["collections"]["a"]["error"], ready
            assert (await client.post("/collections/a/search", json={"query": "rain"})).status_code == 200
            app.state.runtime.sync()  # a replica's sync: an unreadable file is not a deleted collection
            assert (await client.post("/collections/a/search", json={"query": "rain"})).status_code == 200
