"""A real `whitevec serve` process on loopback with the bundled model."""

import json
import time

import httpx
import pytest

from tests.conftest import ServeProcess


SERVERS: list[ServeProcess] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServeProcess(["--demo"], {"WHITEVEC_ADMIN_TOKEN": "serve-test",
                                     "WHITEVEC_DATA_DIR": str(tmp_path_factory.mktemp("serve") / "data")})
    SERVERS.append(proc)
    yield proc.base
    proc.stop()


@pytest.mark.slow
def test_serve_bundled_model_with_demo_index(server):
    base = server
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["model"] == "all-MiniLM-L6-v2" and ready["dim"] == 384
    assert ready["index"]["loaded"] and ready["index"]["count"] > 250
    hits = httpx.post(f"{base}/search", json={"query": "will it rain tomorrow?", "k": 3}).json()["results"][0]["hits"]
    assert hits[0]["metadata"]["topic"] == "weather"
    zh = httpx.post(f"{base}/search", json={"query": "明天会下雨吗", "k": 1}).json()["results"][0]["hits"]
    assert zh[0]["metadata"] == {"lang": "zh", "topic": "weather"}
    emb = httpx.post(f"{base}/embed", json={"texts": ["hello world"] * 3}).json()
    assert emb["dim"] == 384 and len(emb["embeddings"]) == 3
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(["a red bicycle", "a blue car", "green tea"])]
    r = httpx.post(f"{base}/admin/index/rebuild", json={"documents": docs},
                   headers={"Authorization": "Bearer serve-test"})
    assert r.status_code == 409  # 3 documents would quietly replace the demo's 293
    assert "replace the 293 served documents with 3" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/admin/index/rebuild", json={"documents": docs, "confirm_shrink": True},
                   headers={"Authorization": "Bearer serve-test"})
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    for _ in range(300):
        job = httpx.get(f"{base}/admin/jobs/{job_id}", headers={"Authorization": "Bearer serve-test"}).json()
        if job["state"] != "queued" and job["state"] != "running":
            break
        time.sleep(0.1)
    assert job["state"] == "succeeded", json.dumps(job)
    top = httpx.post(f"{base}/search", json={"query": "a bike", "k": 1}).json()["results"][0]["hits"][0]
    assert top["id"] == "d0"


def test_configured_admin_token_is_never_echoed(server):
    proc_output = SERVERS[-1].output()
    assert "serve-test" not in proc_output
    assert "Bearer $WHITEVEC_ADMIN_TOKEN" in proc_output


@pytest.mark.slow
def test_generated_token_printed_once_to_the_console_and_api_key_in_examples(tmp_path, tiny_model_dir):
    proc = ServeProcess(["--model", str(tiny_model_dir)], {
        "WHITEVEC_DATA_DIR": str(tmp_path / "data"), "WHITEVEC_API_KEY": "k3y"})
    try:
        ready = httpx.get(f"{proc.base}/readyz", headers={"Authorization": "Bearer k3y"}).json()
        out = proc.output()
    finally:
        proc.stop()
    line = next(ln for ln in out.splitlines() if "admin token (generated, kept in" in ln)
    token = line.rsplit(" ", 1)[1]
    assert token == (tmp_path / "data" / "admin_token").read_text().strip()
    assert out.count(token) == 1  # the announcement only: the curl example runs `whitevec token` instead
    assert not any(token in ln for ln in out.splitlines() if " INFO " in ln or " WARNING " in ln)
    assert '-H "Authorization: Bearer $WHITEVEC_API_KEY"' in out and "token --data-dir" in out
    assert str(tmp_path) not in json.dumps(ready) and str(tiny_model_dir) not in json.dumps(ready)
