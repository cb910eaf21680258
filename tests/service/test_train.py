"""AM-Softmax training as a background job over HTTP, in its own process."""

import asyncio
import json
import shutil

import numpy as np
import pytest

from whitevec.models.encoder import Encoder
from tests.conftest import ADMIN, TRAIN_EXAMPLES, demo_documents, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio

STARTING = "starting"  # the child process loads the model and reads the pairs

FAST = {"epochs": 15, "batch_size": 12, "lr": 1e-3, "centre_lr": 1e-2, "warmup": 0.0}


async def start_training(client, body: dict) -> str:
    r = await client.post("/admin/train", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


@pytest.mark.slow
async def test_train_and_activate_end_to_end(settings, pairs_file):
    async with serving(settings) as (app, client):
        shutil.copy(pairs_file, settings.import_dir / "eval.tsv")
        first = await rebuild(client, {"documents": demo_documents(), "whitening": {"beta": 0, "gamma": 0, "dim": 16}})
        old_ready = (await client.get("/readyz")).json()
        job_id = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "eval_path": "eval.tsv",
                                               "activate": True, "name": "tiny-tuned"})
        job = await wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        assert job["kind"] == "train" and job["detail"]["loss"] >= 0 and "eval_before" in job["detail"]
        report = job["result"]["report"]
        assert report["steps"] == 15 and report["n_classes"] == 3 and "eval_after" in report
        # the job keeps its loss curve ([step, loss]), so a console or script can draw it after the fact
        saved = json.loads((settings.data_dir / "models" / "tiny-tuned" / "report.json").read_text())["loss"]
        assert [step for step, _ in report["loss"]] == list(range(1, 16)) and [v for _, v in report["loss"]] == saved
        activation = job["result"]["activation"]
        assert activation["documents"] == 12 and activation["whitening"]["params"] == {"beta": 0.0, "gamma": 0.0,
                                                                                       "dim": 16}
        ready = (await client.get("/readyz")).json()
        assert ready["model"] == "tiny-tuned" and ready["version"] == activation["version"] != first["result"]["version"]
        assert ready["dim"] == 16 and ready["index"]["count"] == 12 and ready["model_source"] == "data dir: models/tiny-tuned"
        assert old_ready["model_source"] == "model folder tiny-bert0"
        # The served vectors are the new model's: raw /embed equals encoding with the saved folder.
        model_dir = settings.data_dir / "models" / "tiny-tuned"
        assert (model_dir / "report.json").is_file() and (model_dir / "loss.png").is_file()
        raw = (await client.post("/embed", json={"texts": ["a red cat"], "whiten": False,
                                                 "normalize": False})).json()["embeddings"]
        np.testing.assert_allclose(raw, Encoder(model_dir, device="cpu").encode(["a red cat"]).vectors, atol=1e-4)
        top = (await client.post("/search", json={"query": demo_documents()[3]["text"], "k": 1})).json()
        assert top["version"] == activation["version"]
        assert top["results"][0]["hits"][0]["id"] == demo_documents()[3]["id"]


@pytest.mark.slow
async def test_searches_succeed_while_training(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        job_id = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "epochs": 100_000})
        phases = []
        while (seen := (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json())["progress"]["done"] < 1:
            if seen["state"] == "running":
                phases.append(seen["progress"]["phase"])
            await asyncio.sleep(0.05)  # the child process is training now
        queries = [f"the cat {i}" for i in range(20)]
        answers = await asyncio.gather(*[client.post("/search", json={"query": q, "k": 3}) for q in queries])
        assert [a.status_code for a in answers] == [200] * 20
        assert [a.json()["results"][0]["query"] for a in answers] == queries
        job = (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()
        assert job["state"] == "running"  # the searches above overlapped the training
        # from the start the job says what it does: never 0 of 0 with no phase
        assert phases and set(phases) <= {STARTING, "training"}
        await client.post(f"/admin/jobs/{job_id}/cancel", headers=ADMIN)
        assert (await wait_job(client, job_id))["state"] == "cancelled"


@pytest.mark.slow
async def test_cancel_stops_training_and_keeps_the_bundle(settings):
    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": demo_documents()})
        model = (await client.get("/readyz")).json()["model"]
        job_id = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "epochs": 100_000,
                                               "activate": True})
        while (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()["progress"]["done"] < 2:
            await asyncio.sleep(0.05)
        assert (await client.post(f"/admin/jobs/{job_id}/cancel", headers=ADMIN)).status_code == 200
        job = await wait_job(client, job_id)
        assert job["state"] == "cancelled" and job["progress"]["total"] > job["progress"]["done"] >= 2
        ready = (await client.get("/readyz")).json()
        assert ready["version"] == first["result"]["version"] and ready["model"] == model


@pytest.mark.slow
async def test_failed_training_leaves_the_bundle_serving(settings, tmp_path, tiny_model_dir):
    settings.model_dir = shutil.copytree(tiny_model_dir, tmp_path / "vanishing")
    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": demo_documents()})
        before = (await client.post("/search", json={"query": "rain", "k": 3})).json()
        (settings.model_dir / "model.safetensors").unlink()  # the weights disappear under the server
        job = await wait_job(client, await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST,
                                                                   "activate": True}))
        assert job["state"] == "failed" and "no weights" in job["error"]
        assert (await client.post("/search", json={"query": "rain", "k": 3})).json() == before
        assert (await client.get("/readyz")).json()["version"] == first["result"]["version"]


@pytest.mark.parametrize("body,fragment", [
    ({"examples": [{"text": "a", "label": 1}, {"text": "b", "label": 1}]}, "at least 2 classes"),
    ({"examples": [{"text": "a", "label": 1}, {"text": "b", "label": 2}, {"text": "c", "label": 3}]},
     "at least 2 classes"),
    ({"examples": [{"text": "", "label": 1}, {"text": "b", "label": 1}]}, "examples.0.text"),
    ({"examples": TRAIN_EXAMPLES, "epochs": 0}, "epochs"),
    ({"examples": TRAIN_EXAMPLES, "learning_rate": 0.1}, "unknown field"),
    ({"examples": TRAIN_EXAMPLES, "pairs": [{"text_a": "a", "text_b": "b", "score": 5}]}, "exactly one"),
    ({"pairs": [{"text_a": "a", "text_b": "b", "score": 1}, {"text_a": "c", "text_b": "d", "score": 2}]},
     "lower pair_threshold"),
    ({"path": "../../etc/passwd"}, "outside the import folder"),
    ({"examples": TRAIN_EXAMPLES, "eval_path": "nope.tsv"}, "not a file"),
    ({"examples": TRAIN_EXAMPLES, "name": "../escape"}, "name"),
])
async def test_bad_training_requests(settings, body, fragment):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        r = await client.post("/admin/train", json=body, headers=ADMIN)
        assert r.status_code == (404 if fragment == "not a file" else 422), r.text
        assert fragment in r.json()["error"]["message"]


@pytest.mark.slow
async def test_activate_needs_an_index_and_singletons_warn(settings):
    async with serving(settings) as (app, client):
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, "activate": True}, headers=ADMIN)
        assert r.status_code == 422 and "build one first" in r.json()["error"]["message"]
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES + [{"text": "solo", "label": "x"}],
                                                    "max_steps": 1}, headers=ADMIN)
        assert r.status_code == 202 and r.json()["warnings"] == ["dropped 1 sentence(s) in classes of one sentence only"]
        assert (await wait_job(client, r.json()["job_id"]))["state"] == "succeeded"


@pytest.mark.slow
async def test_two_training_jobs_never_share_a_model_name(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        first = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "name": "same"})
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, **FAST, "name": "same"}, headers=ADMIN)
        assert r.status_code == 422 and "being trained" in r.json()["error"]["message"]
        assert (await wait_job(client, first))["state"] == "succeeded"
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, **FAST, "name": "same"}, headers=ADMIN)
        assert r.status_code == 422 and "already exists" in r.json()["error"]["message"]
        # a cancelled queued job gives its name back
        blocker = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "epochs": 100_000})
        queued = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "name": "other"})
        await client.post(f"/admin/jobs/{queued}/cancel", headers=ADMIN)
        await client.post(f"/admin/jobs/{blocker}/cancel", headers=ADMIN)
        await wait_job(client, blocker)
        await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "name": "other"})


@pytest.mark.slow
async def test_training_in_one_collection_changes_that_collection_only(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        default_before = (await client.get("/admin/versions", headers=ADMIN)).json()
        assert (await client.put("/admin/collections/b", json={}, headers=ADMIN)).status_code == 201
        r = await client.post("/admin/collections/b/rebuild", json={"documents": demo_documents(2)}, headers=ADMIN)
        assert (await wait_job(client, r.json()["job_id"]))["state"] == "succeeded"
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, **FAST, "collection": "nope"},
                              headers=ADMIN)
        assert r.status_code == 404 and "no collection named 'nope'" in r.json()["error"]["message"]
        job_id = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "activate": True,
                                               "name": "tuned-b", "collection": "b"})
        job = await wait_job(client, job_id)
        assert job["state"] == "succeeded" and job["collection"] == "b", job
        assert (await client.get("/readyz")).json()["collections"]["b"]["active_version"] == \
            job["result"]["activation"]["version"]
        assert (await client.post("/collections/b/embed", json={"texts": ["x"]})).json()["model"] == "tuned-b"
        assert (await client.get("/admin/versions", headers=ADMIN)).json() == default_before
        assert (await client.post("/embed", json={"texts": ["x"]})).json()["model"] != "tuned-b"
        # a new collection on the fine-tune shares its loaded weights with b
        made = await client.put("/admin/collections/c", json={"model": "tuned-b"}, headers=ADMIN)
        assert made.status_code == 201 and made.json()["model"] == "tuned-b"
        rt = app.state.runtime
        assert rt.collection("c").bundle.encoder is rt.collection("b").bundle.encoder
        assert len(rt.encoders) == 2


@pytest.mark.slow
async def test_train_then_tune_the_whitening_for_the_fine_tuned_model(settings):
    from tests.service.test_auto_whitening import write_pairs

    async with serving(settings) as (app, client):
        pairs = write_pairs(settings.import_dir)
        await rebuild(client, {"documents": demo_documents(3), "whitening": {"beta": 1, "gamma": 1}})
        r = await client.post("/admin/train", json={"examples": TRAIN_EXAMPLES, **FAST, "whitening": "auto"},
                              headers=ADMIN)
        assert r.status_code == 422 and "activate" in r.json()["error"]["message"]
        job_id = await start_training(client, {"examples": TRAIN_EXAMPLES, **FAST, "activate": True,
                                               "eval_path": pairs, "whitening": "auto"})
        job = await wait_job(client, job_id)
        assert job["state"] == "succeeded", job
        tuning = job["result"]["activation"]["tuning"]
        assert tuning["pairs"] == pairs and tuning["plot"] == f"/admin/jobs/{job_id}/plot.png"
        rows = job["result"]["comparison"]
        assert list(rows) == ["base, raw", "base, served whitening", "fine-tuned, raw", "fine-tuned, tuned whitening"]
        assert all({"spearman", "hit_at_1"} == set(v) for v in rows.values())
        assert rows["fine-tuned, raw"]["spearman"] == pytest.approx(job["result"]["report"]["eval_after"], abs=0.05)
        served = (await client.get("/admin/versions", headers=ADMIN)).json()["versions"][0]["whitening"]
        assert (served["beta"], served["gamma"]) == (tuning["choice"]["beta"], tuning["choice"]["gamma"])
