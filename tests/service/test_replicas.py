"""Stateless replicas on the Milvus backend (issue 11): shared job records, a shared bundle dir, and two
`whitevec serve` processes on one Milvus server that both switch to a new version with no failed search."""

import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, ServeProcess, rebuild, serving
from tests.service.test_corpus import corpus
from whitevec.models.errors import WhitevecError
from whitevec.service.engine.jobs import JobNotCancellable, JobRunner
from whitevec.service.engine.runtime import Runtime
from whitevec.service.engine.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real Postgres server (the `pgserver` package's binaries) on a private socket, for the module."""
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres) -> str:
    """A fresh database on the shared server, as a postgresql:// URL."""
    import uuid

    name = "jobs_" + uuid.uuid4().hex[:12]
    postgres.psql(f"CREATE DATABASE {name};")
    return postgres.get_uri(name)


@pytest.fixture(params=["sqlite", "postgres"])
def jobs_db(request, tmp_path):
    return tmp_path / "jobs.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_replicas_sharing_job_records_fail_and_cancel_only_their_own(jobs_db):
    db = jobs_db
    a, b = JobRunner(db, owner="a"), JobRunner(db, owner="b")
    a.start()
    release = threading.Event()
    job = a.submit("block", lambda ctx: (release.wait(10), {})[1])
    while a.get(job)["state"] != "running":
        time.sleep(0.005)
    b.start()  # b (re)starting must not fail a's running job
    assert a.get(job)["state"] == b.get(job)["state"] == "running"
    assert b.get(job)["replica"] == "a" and [j["id"] for j in b.list()] == [job]
    with pytest.raises(JobNotCancellable, match="runs on replica a; cancel it there"):
        b.cancel(job)
    release.set()
    while b.get(job)["state"] != "succeeded":
        time.sleep(0.005)
    a.stop()
    b.stop()


def test_an_old_jobs_db_gains_the_owner_column_and_its_jobs_count_as_this_replicas(tmp_path):
    import sqlite3

    db = tmp_path / "jobs.sqlite"
    with sqlite3.connect(db) as conn:  # the table as it was before replicas
        conn.execute("""CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
            done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            started_at REAL, finished_at REAL, error TEXT, result TEXT, detail TEXT NOT NULL DEFAULT '{}')""")
        conn.execute("INSERT INTO jobs (id, kind, state, created_at) VALUES ('old', 'rebuild', 'running', 1.0)")
    runner = JobRunner(db, owner="me")
    runner.start()
    job = runner.get("old")
    assert job["state"] == "interrupted" and "while this job was running" in job["error"]
    assert job["replica"] is None
    runner.stop()


def test_a_job_record_survives_in_postgres_and_a_bad_url_is_named_without_its_password(tmp_path, tiny_model_dir,
                                                                                        postgres_url):
    import psycopg

    settings = Settings(data_dir=tmp_path / "data", model_dir=tiny_model_dir, jobs_db=postgres_url, device="cpu")
    runner = Runtime(settings).jobs
    runner.start()
    job = runner.submit("probe", lambda ctx: (ctx.progress(3, 3), {"ok": True})[1], total=3)
    while runner.get(job)["state"] != "succeeded":
        time.sleep(0.01)
    runner.stop()
    with psycopg.connect(postgres_url) as conn:  # really there, with a double-precision timestamp
        state, result, created = conn.execute("SELECT state, result, created_at FROM jobs WHERE id=%s",
                                              (job,)).fetchone()
    assert state == "succeeded" and result == '{"ok": true}' and abs(created - time.time()) < 60
    assert JobRunner(postgres_url).get(job)["result"] == {"ok": True}  # a restart reads it back

    for url, message in [("mysql://u:s3cret@db/jobs", "mysql URLs are not supported"),
                         ("postgresql://u:s3cret@127.0.0.1:1/jobs", "cannot connect to Postgres")]:
        with pytest.raises(WhitevecError, match=message) as err:
            Runtime(Settings(data_dir=tmp_path / "other", model_dir=tiny_model_dir, jobs_db=url))
        assert "s3cret" not in str(err.value)


def test_a_lost_postgres_connection_is_a_503_and_jobs_still_finish(postgres, postgres_url):
    """Postgres restarts or the network drops under a running job: calls meanwhile are a named 503, the
    job's final state is recorded once the connection is back, and the worker keeps running jobs."""
    from whitevec.service.http.errors import domain_to_api
    from whitevec.service.engine.database import JobsUnavailable

    runner = JobRunner(postgres_url, owner="a")
    runner.start()
    go = threading.Event()
    job = runner.submit("probe", lambda ctx: (go.wait(30), {"ok": True})[1])
    while runner.get(job)["state"] != "running":
        time.sleep(0.01)
    name = urlparse(postgres_url).path.lstrip("/")
    kill = f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = '{name}';"
    postgres.psql(kill)
    go.set()  # the job ends, and its final write is the first to meet the dead connection: it retries
    time.sleep(1.5)
    assert runner.get(job)["state"] == "succeeded"
    postgres.psql(kill)
    with pytest.raises(JobsUnavailable, match="lost the Postgres connection") as err:
        runner.get(job)
    assert domain_to_api(err.value).status == 503
    second = runner.submit("next", lambda ctx: {"n": 2})  # the next call connects again
    deadline = time.monotonic() + 30
    while runner.get(second)["state"] != "succeeded":  # and the worker thread is still there
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner.stop()


def test_a_shared_bundle_dir_is_for_milvus_replicas_only(tmp_path, tiny_model_dir):
    """FAISS replicas never follow each other: sharing their versions would let each change its own copy."""
    with pytest.raises(WhitevecError, match="WHITEVEC_BUNDLE_DIR shares versions between replicas on the Milvus"):
        Runtime(Settings(data_dir=tmp_path / "a", model_dir=tiny_model_dir, bundle_dir=tmp_path / "shared"))
    assert not (tmp_path / "a").exists()  # refused before anything was created


@pytest.mark.milvus
def test_a_shared_bundle_dir_keeps_another_replicas_fresh_work(tmp_path, tiny_model_dir):
    """A replica starting must not remove what another replica is writing right now (a .tmp- version, a
    model being written): only leftovers older than a day are leftovers on a shared bundle dir."""
    import os

    def leftovers(root):
        versions = root / "collections" / "default" / "versions"
        paths = [versions / ".tmp-20260101T000000.000000-aaaa", root / "models" / ".tmp-tuned",
                 versions / ".tmp-20200101T000000.000000-bbbb", root / "models" / ".old-tuned"]
        for path in paths:
            path.mkdir(parents=True)
        for path in paths[2:]:
            os.utime(path, (time.time() - 3 * 86400,) * 2)
        return paths

    shared = tmp_path / "bundles"
    paths = leftovers(shared)
    Runtime(Settings(data_dir=tmp_path / "a", model_dir=tiny_model_dir, bundle_dir=shared, index_backend="milvus",
                     milvus_uri=str(tmp_path / "milvus.db"))).open()
    assert [p.exists() for p in paths] == [True, True, False, False]
    paths = leftovers(tmp_path / "b")  # a private data dir: every leftover goes
    Runtime(Settings(data_dir=tmp_path / "b", model_dir=tiny_model_dir)).open()
    assert not any(p.exists() for p in paths)


@pytest.mark.milvus
async def test_a_replica_follows_the_alias_to_the_version_another_activated(settings, tmp_path):
    """Two runtimes on one Milvus client and bundle dir: when one activates a version, the other loads that
    version's whitening with it and answers from its collection (never old vectors against the new index)."""
    shared = {"index_backend": "milvus", "bundle_dir": tmp_path / "bundles", "alias_poll_s": 3600}
    a_settings = settings.model_copy(update={**shared, "data_dir": tmp_path / "a"})
    docs = corpus(48)
    async with serving(a_settings) as (app_a, client_a):
        v1 = (await rebuild(client_a, {"documents": docs}))["result"]["version"]
        # Milvus Lite serves a file to one client per process: b gets a's client in place of its own
        b = Runtime(settings.model_copy(update={**shared, "data_dir": tmp_path / "b",
                                                "milvus_uri": str(tmp_path / "b-own.db")}))
        b.backend.close()
        b.backend._client = app_a.state.runtime.backend._client
        b.load()
        b = b.default  # the collection the routes without a name act on
        assert b.bundle.version == v1 and b.follower.follow_alias() is None
        v2 = (await rebuild(client_a, {"documents": docs, "whitening": {"beta": 1, "gamma": 1, "dim": 8}}))
        v2 = v2["result"]["version"]
        assert b.bundle.version == v1  # it has not looked yet
        assert b.follower.follow_alias() == v2 and b.bundle.version == v2 and b.bundle.pipeline.output_dim() == 8
        query = ["heavy rain in the city"]
        expected = (await client_a.post("/search", json={"queries": query, "k": 5})).json()["results"][0]["hits"]
        pipeline, retriever = b.bundle.pipeline, b.bundle.retriever
        vectors = pipeline.postprocess(pipeline.encoder.encode(query).vectors)
        hits = (await retriever.search(vectors, 5, retriever.search_params(None, None, 64, 512)))[0]
        assert [h.document.id for h in hits] == [h["id"] for h in expected]

        # b activates a version itself while a follow is loading the one a activated: the follow yields
        v3 = (await rebuild(client_a, {"documents": docs}))["result"]["version"]
        load, calls = b.versions.load, []

        def load_while_b_activates(version, **kw):
            calls.append(version)
            loaded = load(version, **kw)
            if len(calls) == 1:
                b.activate(v2, b.bundle.encoder)  # b's own admin call lands meanwhile
            return loaded

        b.versions.load = load_while_b_activates
        assert b.follower.follow_alias() is None and calls[0] == v3 and b.bundle.version == v2


def admin_rebuild(base: str, body: dict) -> str:
    r = httpx.post(f"{base}/admin/index/rebuild", json=body, headers=ADMIN, timeout=30)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/admin/jobs/{r.json()['job_id']}", headers=ADMIN, timeout=30).json()
        if job["state"] == "succeeded":
            return job["result"]["version"]
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"rebuild did not finish: {job}")


def served_version(base: str) -> str | None:
    r = httpx.post(f"{base}/search", json={"query": "x", "k": 1}, timeout=30)
    return r.json()["version"] if r.status_code == 200 else None


def test_two_replicas_on_one_milvus_switch_to_a_new_version_with_no_failed_search(tmp_path, tiny_model_dir,
                                                                                  milvus_server):
    env = {"WHITEVEC_INDEX_BACKEND": "milvus", "WHITEVEC_MILVUS_URI": milvus_server,
           "WHITEVEC_BUNDLE_DIR": str(tmp_path / "bundles"), "WHITEVEC_JOBS_DB": str(tmp_path / "jobs.sqlite"),
           "WHITEVEC_ALIAS_POLL_S": "0.3", "WHITEVEC_ADMIN_TOKEN": ADMIN_TOKEN, "WHITEVEC_DEVICE": "cpu"}
    a = ServeProcess(["--model", str(tiny_model_dir)], {**env, "WHITEVEC_DATA_DIR": str(tmp_path / "a"),
                                                        "WHITEVEC_REPLICA_NAME": "a"}, ready=False)
    b = ServeProcess(["--model", str(tiny_model_dir)], {**env, "WHITEVEC_DATA_DIR": str(tmp_path / "b"),
                                                        "WHITEVEC_REPLICA_NAME": "b"}, ready=False)
    try:
        docs = corpus(60)
        v1 = admin_rebuild(a.base, {"documents": docs})
        deadline = time.monotonic() + 20
        while served_version(b.base) != v1:  # b had no index: it follows the alias to v1
            assert time.monotonic() < deadline, b.output()
            time.sleep(0.1)

        answers: list[tuple[str, int, str | None, list[str], float]] = []
        clients: dict[int, list[str | None]] = {}  # each client's versions, in the order its requests ran
        stop = threading.Event()

        def hammer(name: str, base: str, client: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/search", json={"query": "heavy rain in the city", "k": 5})
                    body = r.json()
                    answers.append((name, r.status_code, body.get("version"),
                                    [h["id"] for h in body["results"][0]["hits"]] if r.status_code == 200 else [],
                                    time.monotonic()))
                    clients.setdefault(client, []).append(body.get("version"))

        threads = [threading.Thread(target=hammer, args=(n, p.base, i))
                   for i, (n, p) in enumerate([("a", a), ("b", b)] * 2)]
        for t in threads:
            t.start()
        v2 = admin_rebuild(a.base, {"documents": docs, "whitening": {"beta": 1, "gamma": 1, "dim": 8}})
        switched = time.monotonic()
        deadline = switched + 20
        while not any(n == "b" and v == v2 for n, _, v, _, _ in answers):
            assert time.monotonic() < deadline, b.output()
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    finally:
        a.stop()
        b_log = b.output(tail=None)  # access lines follow the switch: the whole log
        b.stop()

    assert sum(n == "b" for n, *_ in answers) >= 10
    failed = [x for x in answers if x[1] != 200]
    assert not failed, failed[:5]
    assert {v for _, _, v, _, _ in answers} == {v1, v2}
    # each client switches once and never goes back (two clients' requests to one replica may finish in
    # either order around the switch, so the order is each client's own)
    for client, seen in clients.items():
        assert seen[-1] == v2 and (v1 not in seen or seen.index(v2) == len(seen) - seen[::-1].index(v1)), (client,
                                                                                                             seen)
    ids = {(n, v): tuple(i) for n, _, v, i, _ in answers}
    assert ids[("a", v1)] == ids[("b", v1)] and ids[("a", v2)] == ids[("b", v2)]
    first_b = min(t for n, _, v, _, t in answers if n == "b" and v == v2)
    assert first_b - switched < 5, "b took longer than a few seconds to follow the alias"
    assert f"another replica activated version {v2}" in b_log
