"""Admin operations that overlap, on both backends: no acknowledged change is lost, a rollback is
never silently undone, prune never takes a version about to be activated, and nothing leaks."""

import asyncio
import gc
import shutil
import threading

import pytest

from tests.conftest import ADMIN, make_tiny_bert, rebuild, serving
from tests.service.test_corpus import corpus
from whitevec.index.faiss_index import VectorIndex
from whitevec.index.store import Document
from whitevec.service.engine import corpus_builds as corpus_module

pytestmark = pytest.mark.anyio



def during_build(monkeypatch, action):
    """Run `action()` inside the next build, after the job has read the corpus (deterministic overlap)."""
    original = corpus_module.build_version
    done = []

    def wrapped(*args, **kwargs):
        if not done:
            done.append(True)
            action()
        return original(*args, **kwargs)

    monkeypatch.setattr(corpus_module, "build_version", wrapped)
    return done


def changes(rt, docs):
    """One upsert and one delete, acknowledged through the runtime (as the routes call it)."""
    def act():
        rt.default.corpus_changes.change_documents([Document("during", "written while the job ran", {"topic": "new"})], [])
        assert rt.default.corpus_changes.change_documents([], [docs[5]["id"]])["deleted"] == 1
    return act


async def assert_carried(client, docs, version: str) -> None:
    assert (await client.get("/admin/documents/during", headers=ADMIN)).json()["version"] == version
    assert (await client.get(f"/admin/documents/{docs[5]['id']}", headers=ADMIN)).status_code == 404
    hits = (await client.post("/search", json={"query": "written while the job ran", "k": 1})).json()
    assert hits["results"][0]["hits"][0]["id"] == "during" and hits["version"] == version
    assert (await client.get("/readyz")).json()["index"]["count"] == len(docs)


async def test_changes_during_a_merge_rebuild_carry_over(backend_settings, monkeypatch):
    docs = corpus(30)
    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        during_build(monkeypatch, changes(rt, docs))
        merged = [{"id": "merged-1", "text": "a merged document"}, {"id": "merged-2", "text": "another one"}]
        job = await rebuild(client, {"documents": merged, "mode": "merge"})
        assert job["state"] == "succeeded", job
        await assert_carried(client, [*docs, *merged], job["result"]["version"])


async def test_changes_during_a_rewhitening_carry_over(backend_settings, monkeypatch):
    docs = corpus(30)
    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        during_build(monkeypatch, changes(rt, docs))
        job = await rebuild(client, {"reencode": False, "whitening": {"beta": 1.0, "gamma": 1.0, "dim": 8}})
        assert job["state"] == "succeeded", job
        await assert_carried(client, docs, job["result"]["version"])


async def test_changes_during_a_model_activation_carry_over_reencoded(backend_settings, monkeypatch, tmp_path):
    docs = corpus(30)
    other = make_tiny_bert(tmp_path / "fine-tuned", seed=7)  # other weights: carried texts are re-encoded
    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        during_build(monkeypatch, changes(rt, docs))
        result = await asyncio.to_thread(rt.training.activate_model, None, rt.default, other)
        assert rt.default.bundle.encoder.model_dir == other.resolve()
        await assert_carried(client, docs, result["version"])
        vectors = rt.default.bundle.retriever.fetch(["during"])[1]
        want = rt.default.bundle.encoder.encode(["written while the job ran"]).vectors
        assert abs(vectors - want).max() < 1e-4


async def test_a_rollback_during_a_rebuild_fails_the_job_and_loses_nothing(backend_settings, monkeypatch):
    docs = corpus(30)
    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        old = (await rebuild(client, {"documents": docs}))["result"]["version"]
        served = (await rebuild(client, {"documents": docs}))["result"]["version"]
        before = set(rt.default.versions.versions())

        def rollback_then_change():
            rt.default.activate_existing(old)
            changes(rt, docs)()

        during_build(monkeypatch, rollback_then_change)
        job = await rebuild(client, {"reencode": False, "whitening": {"beta": 0.0, "gamma": 0.0, "dim": 8}})
        assert job["state"] == "failed" and "the served version changed while this job ran" in job["error"]
        assert "run the job again" in job["error"] and served in job["error"] and old in job["error"]
        await assert_carried(client, docs, old)  # the rollback stands, with the changes made after it
        assert set(rt.default.versions.versions()) == before  # the job's version was discarded, nothing else


async def test_re_activating_the_served_version_during_a_rebuild_fails_nothing(backend_settings, monkeypatch):
    """A double click on the served version's "activate" while a job runs: the served version did not change,
    so the job goes through, carrying over the changes made meanwhile."""
    docs = corpus(30)
    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        served = (await rebuild(client, {"documents": docs}))["result"]["version"]

        def reactivate_then_change():
            rt.default.activate_existing(served)
            changes(rt, docs)()

        during_build(monkeypatch, reactivate_then_change)
        job = await rebuild(client, {"reencode": False, "whitening": {"beta": 0.0, "gamma": 0.0, "dim": 8}})
        assert job["state"] == "succeeded", job
        assert job["result"]["version"] != served
        await assert_carried(client, docs, job["result"]["version"])


async def test_prune_never_takes_the_version_a_job_is_about_to_activate(backend_settings, monkeypatch):
    backend_settings.keep_versions = 1
    docs = corpus(30)
    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        a = (await rebuild(client, {"documents": docs}))["result"]["version"]
        b = (await rebuild(client, {"documents": docs}))["result"]["version"]
        original = corpus_module.build_version

        def build_then_prune(*args, **kwargs):
            result = original(*args, **kwargs)
            rt.default.versions.prune(1)  # another activation's prune, between this build and its activation
            return result

        monkeypatch.setattr(corpus_module, "build_version", build_then_prune)
        job = await rebuild(client, {"reencode": False})
        assert job["state"] == "succeeded", job
        assert rt.default.bundle.version == job["result"]["version"] and {a, b} & set(rt.default.versions.versions())


def whitevec_threads() -> int:
    for closer in [t for t in threading.enumerate() if t.name == "whitevec-close"]:
        closer.join(10)  # a swapped-out bundle closing after its last lease: let it finish before counting
    return sum(1 for t in threading.enumerate() if t.name.startswith(("whitevec-faiss", "whitevec-torch-search")))


async def test_indexes_and_threads_stay_flat_across_20_swaps(settings):
    docs = corpus(40)
    async with serving(settings) as (app, client):
        first = (await rebuild(client, {"documents": docs}))["result"]["version"]
        await client.post("/search", json={"query": "rain"})
        gc.collect()
        live, threads = VectorIndex.live(), whitevec_threads()
        assert live == 1
        for i in range(20):
            if i % 3 == 0:
                job = await rebuild(client, {"reencode": False, "whitening": {"dim": 8 + i % 2}})
            elif i % 3 == 1:
                job = await rebuild(client, {"documents": docs, "index": {"type": "flat"}})
            else:
                r = await client.post(f"/admin/versions/{first}/activate", headers=ADMIN)
                assert r.status_code == 200
                job = {"state": "succeeded"}
            assert job["state"] == "succeeded", job
            assert (await client.post("/search", json={"query": "rain", "filter": {"topic": "weather"}})).status_code == 200
            assert (await client.post("/search", json={"query": "rain"})).status_code == 200
        threads_now = whitevec_threads()
        gc.collect()
        assert VectorIndex.live() == live and threads_now <= threads
    threads_now = whitevec_threads()
    gc.collect()
    assert VectorIndex.live() == 0 and threads_now == 0


async def test_a_request_keeps_its_bundle_open_across_a_swap(settings):
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        first = (await rebuild(client, {"documents": docs}))["result"]["version"]
        await rebuild(client, {"documents": docs})
        with rt.default.served.lease() as leased:
            await asyncio.to_thread(rt.default.activate_existing, first)
            found = await leased.retriever.search(rt.default.bundle.pipeline.postprocess(
                rt.default.bundle.encoder.encode(["rain"]).vectors), 3, leased.retriever.search_params(None, None, 1, 1))
            assert len(found[0]) == 3  # swapped out, still open for this lease
        # closed once the lease ended, in a thread of its own (never on the event loop the lease ended on)
        query = rt.default.bundle.pipeline.postprocess(rt.default.bundle.encoder.encode(["rain"]).vectors)
        closers = [t for t in threading.enumerate() if t.name == "whitevec-close"]
        for thread in closers:
            thread.join(10)
        with pytest.raises(RuntimeError, match="closed"):
            leased.index.search(query, 3)


@pytest.mark.parametrize("damage", ["lost-wal", "truncated", "removed", "flipped-wal", "lost-head-and-wal",
                                    "every-change-file"])
async def test_a_change_log_that_lost_acknowledged_changes_is_refused_visibly(settings, damage):
    """Refused, the previous version served, and the refused files left byte for byte as found (a read-only
    check: opening them to write would checkpoint the -wal away, and with it the changes after the damage)."""
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        older = (await rebuild(client, {"documents": docs}))["result"]["version"]
        version = (await rebuild(client, {"documents": docs}))["result"]["version"]
        folder = rt.default.versions.folder(version)
        await client.post("/admin/documents", headers=ADMIN, json={"documents": [{"id": "a", "text": "first"}]})
        shutil.copy(folder / "changes.sqlite", folder.parent / "early-copy")  # the state before the WAL's frames
        for i in range(20):
            r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [{"id": f"u{i}", "text": "x"}]})
            assert r.status_code == 200
        # what a kill -9 leaves: the database and its -wal as they are while serving
        shutil.copy(folder / "changes.sqlite", folder.parent / "live-db")
        shutil.copy(folder / "changes.sqlite-wal", folder.parent / "live-wal")
    log, wal, head = folder / "changes.sqlite", folder / "changes.sqlite-wal", folder / "changes.head"
    if damage == "lost-wal":
        shutil.move(folder.parent / "early-copy", log)
    elif damage == "truncated":
        log.write_bytes(log.read_bytes()[:4096])
    elif damage == "removed":
        log.unlink()
    elif damage == "flipped-wal":
        shutil.move(folder.parent / "live-db", log)
        data = bytearray((folder.parent / "live-wal").read_bytes())
        middle = len(data) // 2
        data[middle: middle + 64] = bytes(b ^ 0xFF for b in data[middle: middle + 64])
        wal.write_bytes(bytes(data))
    elif damage == "lost-head-and-wal":
        shutil.move(folder.parent / "early-copy", log)
        head.unlink()
    else:
        for path in folder.glob("changes.*"):
            path.unlink()
    left = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("changes.")}
    async with serving(settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "degraded" and ready["version"] == older
        assert ready["refused"]["version"] == version and "changes.sqlite" in ready["refused"]["reason"]
        assert str(settings.data_dir) not in str(ready)
        found = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("changes.")}
        assert found == left  # nothing checkpointed, rewritten or removed


async def test_slow_job_records_never_stall_the_event_loop(settings, monkeypatch):
    """/metrics, /readyz and /admin/jobs read job records (SQLite or Postgres, which may wait): off the
    event loop, so /healthz and /search answer meanwhile."""
    from whitevec.service.engine.jobs import JobRunner

    release = threading.Event()
    original = JobRunner.counts

    def slow_counts(self):
        release.wait(10)
        return original(self)

    monkeypatch.setattr(JobRunner, "counts", slow_counts)  # before the app binds it to /metrics
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": corpus(30)})
        monkeypatch.setattr(JobRunner, "list", lambda self, limit=100, collection=None: (release.wait(10), [])[1])
        stuck = [asyncio.ensure_future(client.get("/metrics")),
                 asyncio.ensure_future(client.get("/admin/jobs", headers=ADMIN))]
        await asyncio.sleep(0.2)
        assert (await asyncio.wait_for(client.get("/healthz"), 5)).status_code == 200
        assert (await asyncio.wait_for(client.post("/search", json={"query": "rain"}), 5)).status_code == 200
        assert not any(t.done() for t in stuck)  # still waiting on the records, and nobody else is
        release.set()
        assert [(await t).status_code for t in stuck] == [200, 200]


async def test_upserts_waiting_on_the_model_leave_the_thread_pool_to_searches(settings):
    """Upserts wait for the model in the batcher's queue, holding no thread: six of them waiting on a stuck
    model take nothing from the default thread pool that document reads and filtered searches use."""
    docs = corpus(30)
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": docs})
        release = threading.Event()
        encoder = rt.default.bundle.encoder
        original = encoder.embed_tokens
        encoder.embed_tokens = lambda ids: (release.wait(10), original(ids))[1]
        try:
            upserts = [asyncio.ensure_future(client.post("/admin/documents", headers=ADMIN, json={
                "documents": [{"id": f"u{i}", "text": f"upsert {i}"}]})) for i in range(6)]
            await asyncio.sleep(0.2)
            for _ in range(8):  # more than the default pool's threads on this machine
                r = await asyncio.wait_for(client.get(f"/admin/documents/{docs[0]['id']}", headers=ADMIN), 5)
                assert r.status_code == 200
            await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(lambda: None) for _ in range(16))), 5)
            assert not any(u.done() for u in upserts)
        finally:
            release.set()
        assert [(await u).status_code for u in upserts] == [200] * 6
        del encoder.embed_tokens
        flt = {"query": "rain", "filter": {"topic": "weather"}}
        assert (await client.post("/search", json=flt)).status_code == 200


@pytest.mark.milvus
async def test_a_failed_alias_flip_leaves_active_as_it_was(settings, tmp_path, monkeypatch):
    from whitevec.index import milvus_target as milvus_module

    milvus = settings.model_copy(update={"data_dir": tmp_path / "milvus-data", "index_backend": "milvus"})
    async with serving(milvus) as (app, client):
        rt = app.state.runtime
        first = (await rebuild(client, {"documents": corpus(30)}))["result"]["version"]
        second = (await rebuild(client, {"documents": corpus(30)}))["result"]["version"]

        def unreachable(*args, **kwargs):
            raise ConnectionError("Milvus is unreachable")

        monkeypatch.setattr(milvus_module, "point_alias", unreachable)  # where activation flips the alias
        r = await client.post(f"/admin/versions/{first}/activate", headers=ADMIN)
        assert r.status_code >= 400 and rt.default.versions.active() == second and rt.default.bundle.version == second


def test_concurrent_activations_keep_one_consistent_history(tmp_path, tiny_encoder):
    """ACTIVE is read-modified-written under the version store's lock, with a temp name per writer."""
    from concurrent.futures import ThreadPoolExecutor

    from whitevec.index.versions import VersionStore
    from tests.index.test_damage import build

    stores = [VersionStore(tmp_path), VersionStore(tmp_path)]  # two replicas on one bundle dir
    made = [build(stores[0], tiny_encoder) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: stores[i % 2].activate(made[i % 4]), range(200)))
    history = [h["version"] for h in stores[1].history()]
    assert len(history) == len(set(history)) == 4 and stores[0].active() in made
    assert not list(stores[0].root.glob("*.tmp")) and not list(stores[0].root.glob(".*.tmp"))


def test_errors_map_to_the_status_that_names_whose_fault_it_is():
    from whitevec.index.documents import ImportFileMissing
    from whitevec.index.versions import ServedVersionChanged, VersionDamaged
    from whitevec.models.errors import DimNotServed
    from whitevec.service.http.errors import domain_to_api

    assert domain_to_api(VersionDamaged("x")).status == 500  # the disk's fault, not the request's
    assert domain_to_api(ServedVersionChanged("x")).status == 409
    assert domain_to_api(DimNotServed("x")).status == 409
    assert domain_to_api(ImportFileMissing("x")).status == 404


async def test_a_job_cancelled_after_its_build_leaves_no_version_behind(settings, monkeypatch):
    async with serving(settings) as (app, client):
        rt = app.state.runtime
        await rebuild(client, {"documents": corpus(30)})
        before = set(rt.default.versions.versions())
        during_build(monkeypatch, lambda: rt.jobs.cancel(rt.jobs._running))  # lands while the version is written
        job = await rebuild(client, {"reencode": False, "whitening": {"dim": 8}})
        assert job["state"] == "cancelled" and set(rt.default.versions.versions()) == before


async def test_an_activation_loses_no_change_acknowledged_while_it_loads(backend_settings, monkeypatch):
    """An activation loads its version outside the change lock (a load verifies every part: seconds). An
    upsert acknowledged in that window must be in what is served after it: re-activating the served version
    (a double click on rollback) keeps the served bundle; any other activation catches up under the lock."""
    from whitevec.service.engine.collection import Collection

    async with serving(backend_settings) as (app, client):
        rt = app.state.runtime
        loop = asyncio.get_running_loop()
        await rebuild(client, {"documents": corpus(30)})
        target = (await rebuild(client, {"documents": corpus(30)}))["result"]["version"]
        original = Collection.load_version
        landed: list[str] = []

        def load_then_upsert(self, version, encoder=None, checksums=True):
            bundle = original(self, version, encoder, checksums)
            if not landed:  # a write acknowledged after the load read the change log, before the swap
                doc = f"during-{len(landed)}"
                r = asyncio.run_coroutine_threadsafe(client.post("/admin/documents", headers=ADMIN, json={
                    "documents": [{"id": doc, "text": "written while the activation loaded"}]}), loop).result(30)
                assert r.status_code == 200, r.text
                landed.append(doc)
            return bundle

        monkeypatch.setattr(Collection, "load_version", load_then_upsert)
        r = await client.post(f"/admin/versions/{target}/activate", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (await client.get(f"/admin/documents/{landed[0]}", headers=ADMIN)).status_code == 200
        before = rt.default.bundle.retriever.count()
        monkeypatch.setattr(Collection, "load_version", original)
        r = await client.post(f"/admin/versions/{target}/activate", headers=ADMIN)  # and once more
        assert r.status_code == 200 and r.json()["documents"] == before
        assert (await client.get(f"/admin/documents/{landed[0]}", headers=ADMIN)).status_code == 200
    async with serving(backend_settings) as (app, client):  # and after a restart
        assert (await client.get(f"/admin/documents/{landed[0]}", headers=ADMIN)).status_code == 200


def test_the_last_lease_of_a_swapped_out_bundle_closes_it_off_the_callers_thread():
    """The last lease often ends on the event loop: freeing the index, gc and malloc_trim run in a thread of
    their own, never in the caller's (a swap with no lease held closes at once, in the swapping thread)."""
    from whitevec.service.engine.serving import ServedBundle

    class Closing:  # only what ServedBundle calls on a bundle
        closed_in: str | None = None

        def close(self) -> None:
            self.closed_in = threading.current_thread().name

    served, a, b = ServedBundle(), Closing(), Closing()
    served.swap(a)
    with served.lease() as leased:
        assert leased is a
        served.swap(b)
        assert a.closed_in is None  # a request still holds it
    for closer in [t for t in threading.enumerate() if t.name == "whitevec-close"]:
        closer.join(10)
    assert a.closed_in == "whitevec-close" != threading.current_thread().name
    served.swap(None)
    assert b.closed_in == threading.current_thread().name
