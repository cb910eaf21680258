"""Shared fixtures: a tiny random BERT written to disk and loaded through the real loader."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ENGLISH = ("the a cat dog sat on mat hello world search vector index model text good bad day sun rain "
           "is are was be ##rt ##s ##ing ##ed ##er red blue green house car tree city river").split()
CHINESE_CHARS = list("今天气不错我们的朋友世界用模型好很雨下在是人大小中国家学生")
CHINESE_WORDS = ["今天", "不错", "我们", "世界", "中国", "学生"]
VOCAB = SPECIAL + ENGLISH + CHINESE_CHARS + CHINESE_WORDS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ENGINE_MARKS = {"milvus_server": "milvus", "postgres": "postgres", "postgres_url": "postgres"}


def pytest_collection_modifyitems(items) -> None:
    """Tests of an engine (Milvus, Postgres, Ray) are marked by what they use, and every such test is
    also `slow`: `pytest -m "not slow"` is the everyday subset, CI runs everything."""
    for item in items:
        for fixture, mark in ENGINE_MARKS.items():
            if fixture in item.fixturenames:
                item.add_marker(mark)
        for mark in ("milvus", "postgres"):
            if mark in getattr(getattr(item, "callspec", None), "id", ""):
                item.add_marker(mark)
        if item.path.parent.name == "clients" or item.path.name == "test_serve.py":
            item.add_marker("slow")  # a real `whitevec serve` process per module
        if any(item.get_closest_marker(m) for m in ("milvus", "postgres", "ray")):
            item.add_marker("slow")


def make_tiny_bert(folder: Path, seed: int = 0, pooler: bool = True, hidden: int = 32) -> Path:
    """A 2-layer random BERT in Hugging Face format, small enough to run in milliseconds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizer.from_pretrained(str(folder), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(str(folder))
    return folder


#: The CPU flags in-process tests run with: `auto` picks its engine by the CPU (bf16 on AMX-BF16 or AVX-512
#: BF16, else onnx), and tests compare vectors with torch's, so they run as on a CPU without bf16 instructions
#: whatever the machine.
#: Tests of the choice fake the flags themselves; servers started as processes see the real ones.
PLAIN_CPU = frozenset({"sse4_2", "avx2", "fma"})


@pytest.fixture(autouse=True)
def plain_cpu(monkeypatch):
    monkeypatch.setattr("whitevec.models.engines.cpu_flags", lambda *_: PLAIN_CPU)
    return PLAIN_CPU


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    from whitevec.models.encoder import Encoder

    return Encoder(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def bundled_encoder():
    from whitevec.models.encoder import Encoder

    return Encoder(device="cpu")


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    """A small STS-style file the test suite writes itself."""
    rows = [
        ("the cat sat on the mat", "a cat sat on a mat", 5.0),
        ("the dog sat on the mat", "a cat is on the mat", 3.0),
        ("hello world", "hello world", 5.0),
        ("red car", "blue house", 0.5),
        ("good day sun", "bad day rain", 1.5),
        ("search vector index", "vector index search", 4.5),
        ("the river city", "a green tree", 0.0),
        ("今天天气不错", "今天天气很好", 4.0),
        ("我们的朋友", "我们是朋友", 3.5),
        ("中国学生", "大学生", 2.0),
    ]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows), encoding="utf-8")
    return path


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


# --- service fixtures ------------------------------------------------------------------------

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

TOPICS = {
    "weather": ["the sun is out today", "heavy rain in the city", "a good day with blue sky", "今天天气不错"],
    "animals": ["the cat sat on the mat", "a dog in the house", "the red cat is good", "我们的朋友是小狗"],
    "travel": ["the car by the river", "a city with a big tree", "the train to the city", "中国的大城市"],
}

TRAIN_EXAMPLES = [
    {"text": t, "label": label}
    for label, texts in {
        "weather": ["the sun is out", "a good day with sun", "blue sky and sun", "rain in the city"],
        "animals": ["the cat sat on the mat", "a cat and a dog", "the dog is in the house", "a red cat"],
        "travel": ["the car by the river", "a train to the city", "the city by the river", "a big car"],
    }.items()
    for t in texts
]


def demo_documents(n_each: int = 1) -> list[dict]:
    """Small documents the suite writes itself: a few topics, English and Chinese."""
    docs = []
    for topic, texts in TOPICS.items():
        for rep in range(n_each):
            for i, text in enumerate(texts):
                suffix = "" if rep == 0 else f" {rep}"
                docs.append({"id": f"{topic}-{i}-{rep}", "text": text + suffix, "metadata": {"topic": topic}})
    return docs


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


#: The index backends a test runs on when it asks for `backend_settings` (Milvus Lite in a file).
BACKENDS = ["faiss", pytest.param("milvus", marks=pytest.mark.milvus)]


@pytest.fixture(params=BACKENDS)
def backend_settings(request, settings, tmp_path):
    """`settings` on each index backend: FAISS files, then embedded Milvus Lite."""
    if request.param == "faiss":
        return settings
    return settings.model_copy(update={"data_dir": tmp_path / "milvus-data", "index_backend": "milvus"})


@pytest.fixture
def settings(tmp_path, tiny_model_dir):
    from whitevec.service.engine.settings import Settings

    return Settings(data_dir=tmp_path / "data", model_dir=tiny_model_dir, admin_token=ADMIN_TOKEN,
                    device="cpu")


async def wait_ready(client: httpx.AsyncClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get("/readyz")
        if r.status_code == 200:
            return r.json()
        await asyncio.sleep(0.02)
    raise AssertionError(f"not ready after {timeout}s: {r.text}")


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = (await client.get(f"/admin/jobs/{job_id}", headers=ADMIN)).json()
        if job["state"] in ("succeeded", "failed", "cancelled", "interrupted"):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@asynccontextmanager
async def serving(settings):
    """The real app, lifespan and all, behind httpx's ASGI transport."""
    from whitevec.service.http.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://whitevec") as client:
            await wait_ready(client)
            yield app, client


@contextmanager
def slowed_encoder(app, seconds: float):
    """Make every model batch of the served encoder take at least `seconds` (deterministic overlap)."""
    encoder = app.state.runtime.default.bundle.encoder
    original = encoder.embed_tokens

    def slow(ids):
        time.sleep(seconds)
        return original(ids)

    encoder.embed_tokens = slow
    try:
        yield encoder
    finally:
        del encoder.embed_tokens


async def rebuild(client: httpx.AsyncClient, body: dict) -> dict:
    r = await client.post("/admin/index/rebuild", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    return await wait_job(client, r.json()["job_id"])


# --- a real `whitevec serve` process on loopback -----------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`python -m whitevec.service.cli.main serve` on a free loopback port; stopped by stop()."""

    def __init__(self, args: list[str], env: dict[str, str], ready: bool = True, timeout: float = 180) -> None:
        import tempfile

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: an unread pipe fills up with access logs and blocks the server.
        self.log = tempfile.NamedTemporaryFile("w+", prefix="whitevec-serve-", suffix=".log")
        # Servers run onnx unless a test says otherwise, as in-process tests run as on a CPU without bf16 instructions
        # (PLAIN_CPU): bf16's vectors move with a batch's padding more than the 1e-5 tests compare to.
        self.proc = subprocess.Popen([sys.executable, "-m", "whitevec.service.cli.main", "serve", "--port", str(self.port), *args],
                                     env={"WHITEVEC_ENGINE": "onnx", **os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{self.base}/readyz", timeout=1).status_code
                if status == 200 or (not ready and status == 503):
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(self.output())
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"whitevec serve did not answer on {self.base}")

    def output(self, tail: int | None = 5000) -> str:
        """What the process printed: the last `tail` characters (all of it with None)."""
        self.log.seek(0)
        text = self.log.read()
        return text[-tail:] if tail else text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def milvus_server(tmp_path):
    """A Milvus Lite server process on loopback: one Milvus that several whitevec processes share."""
    from pymilvus import MilvusClient

    port, log_path = free_port(), tmp_path / "milvus.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "milvus"),
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    uri, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            client = MilvusClient(uri, timeout=2)
            client.list_collections()
            client.close()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(log_path.read_text()[-3000:]) from None
            time.sleep(0.2)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
