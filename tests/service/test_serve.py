"""A real `whitevec serve` process on loopback with the bundled model."""

import json
import time

import httpx
import pytest

from tests.conftest import ServeProcess


@pytest.fixture
def server(tmp_path):
    proc = ServeProcess(["--demo"], {"WHITEVEC_ADMIN_TOKEN": "serve-test", "WHITEVEC_DATA_DIR": str(tmp_path / "data")})
    yield proc.base
    proc.stop()


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
