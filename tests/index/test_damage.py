"""Stored versions (issue 8): damage is detected, never served; pruning follows activation history;
one process per data dir."""

import json
import os
import shutil

import pytest
from whitevec.index.build import build_version
from whitevec.index.datadir import DataDirLock, DataDirLocked
from whitevec.index.spec import IndexSpec
from whitevec.index.store import Document
from whitevec.index.versions import VersionDamaged, VersionStore
from whitevec.models.whitening import WhiteningParams

from tests.conftest import ADMIN, demo_documents, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio


def docs(n_each: int = 1) -> list[Document]:
    return [Document(d["id"], d["text"], d["metadata"]) for d in demo_documents(n_each)]


def build(store: VersionStore, encoder, n_each: int = 1, dim: int = 8) -> str:
    return build_version(store, encoder, docs(n_each), WhiteningParams(0, 0, dim), IndexSpec()).version


def flip_bytes(path, offset: int = 200, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    offset = min(offset, len(data) - n)
    data[offset:offset + n] = bytes((b ^ 0x5A) for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("part", ["index.faiss", "docs.sqlite", "whitening.npz", "raw.npy"])
def test_random_bytes_in_any_part_are_refused(tmp_path, tiny_encoder, part):
    store = VersionStore(tmp_path)
    version = build(store, tiny_encoder)
    store.load(version, encoder=tiny_encoder)  # intact: loads
    flip_bytes(store.folder(version) / part)
    with pytest.raises(VersionDamaged, match=f"{part} does not match its checksum"):
        store.load(version, encoder=tiny_encoder)


def test_truncated_and_missing_parts_are_refused(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    version = build(store, tiny_encoder)
    index = store.folder(version) / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(VersionDamaged, match="index.faiss has 100 bytes"):
        store.load(version, encoder=tiny_encoder)
    index.unlink()
    with pytest.raises(VersionDamaged, match="index.faiss is missing"):
        store.load(version, encoder=tiny_encoder)


def test_a_part_copied_from_another_version_is_refused(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    a = build(store, tiny_encoder)
    b = build(store, tiny_encoder, n_each=2)
    shutil.copy(store.folder(b) / "docs.sqlite", store.folder(a) / "docs.sqlite")
    with pytest.raises(VersionDamaged, match="docs.sqlite"):
        store.load(a, encoder=tiny_encoder)


def test_counts_are_checked_even_without_checksums(tmp_path, tiny_encoder):
    """A manifest of a version written before checksums existed: the parts must still agree."""
    store = VersionStore(tmp_path)
    a = build(store, tiny_encoder)
    b = build(store, tiny_encoder, n_each=2)
    manifest = store.manifest(a)
    del manifest["parts"]
    (store.folder(a) / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(store.folder(b) / "index.faiss", store.folder(a) / "index.faiss")
    with pytest.raises(VersionDamaged, match="index.faiss holds 24 vectors, the manifest says 12"):
        store.load(a, encoder=tiny_encoder)


async def test_damaged_active_version_serves_the_newest_intact_one(settings):
    async with serving(settings) as (app, client):
        first = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
        second = (await rebuild(client, {"documents": demo_documents(2)}))["result"]["version"]
        before = (await client.post("/search", json={"query": "rain", "k": 3})).json()
    flip_bytes(settings.data_dir / "collections" / "default" / "versions" / second / "index.faiss")
    async with serving(settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "degraded" and ready["version"] == first
        assert ready["refused"]["version"] == second and "checksum" in ready["refused"]["reason"]
        after = (await client.post("/search", json={"query": "rain", "k": 3})).json()
        assert after["version"] == first and after != before
        # a rebuild replaces the damaged version and clears the degraded state
        third = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["version"] == third and ready["refused"] is None


@pytest.mark.parametrize("pointer", [None, '{"version": "20200101T000000.000000-dead"}', "not json"])
async def test_a_server_with_a_bad_pointer_serves_the_newest_version_and_keeps_all(settings, pointer):
    async with serving(settings) as (app, client):
        first = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
        second = (await rebuild(client, {"documents": demo_documents(2)}))["result"]["version"]
    active = settings.data_dir / "collections" / "default" / "versions" / "ACTIVE"
    active.unlink() if pointer is None else active.write_text(pointer)
    async with serving(settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "degraded" and ready["version"] == second
        assert ready["refused"]["served_instead"] == second
        assert ready["refused"]["reason"].startswith("versions/ACTIVE ") and str(settings.data_dir) not in str(ready)
        listed = (await client.get("/admin/versions", headers=ADMIN)).json()
        assert {v["version"] for v in listed["versions"]} == {first, second}
        r = await client.post("/search", json={"query": "rain", "k": 3})
        assert r.status_code == 200 and r.json()["version"] == second
        r = await client.post(f"/admin/versions/{first}/activate", headers=ADMIN)
        assert r.status_code == 200
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["version"] == first
    assert {first, second} <= set(os.listdir(settings.data_dir / "collections" / "default" / "versions"))


async def test_a_pointer_naming_a_folder_outside_its_collection_is_refused(settings):
    """ACTIVE naming `../../a/versions/<v>` must not serve collection a's documents under `default`."""
    async with serving(settings) as (app, client):
        own = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
        assert (await client.put("/admin/collections/a", headers=ADMIN, json={})).status_code == 201
        r = await client.post("/admin/collections/a/rebuild", headers=ADMIN, json={"documents": [
            {**d, "id": f"secret-{d['id']}"} for d in demo_documents()]})
        theirs = (await wait_job(client, r.json()["job_id"]))["result"]["version"]
    active = settings.data_dir / "collections" / "default" / "versions" / "ACTIVE"
    active.write_text(json.dumps({"version": f"../../a/versions/{theirs}"}))
    async with serving(settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "degraded" and ready["version"] == own
        assert "is not a version name" in ready["refused"]["reason"]
        hits = (await client.post("/search", json={"query": "rain", "k": 20})).json()["results"][0]["hits"]
        assert hits and not any(h["id"].startswith("secret-") for h in hits)
        r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [{"id": "x", "text": "mine"}]})
        assert r.status_code == 200
    a_versions = settings.data_dir / "collections" / "a" / "versions" / theirs
    assert not (a_versions / "changes.sqlite").exists()  # nothing was written into a's version


async def test_no_intact_version_left_says_to_rebuild(settings):
    async with serving(settings) as (app, client):
        only = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
    (settings.data_dir / "collections" / "default" / "versions" / only / "docs.sqlite").write_bytes(b"garbage")
    async with serving(settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["refused"]["served_instead"] is None and ready["index"]["loaded"] is False
        r = await client.post("/search", json={"query": "rain"})
        assert r.status_code == 409 and f"active version {only} cannot be served" in r.json()["error"]["message"]
        job = await rebuild(client, {"documents": demo_documents()})
        assert job["state"] == "succeeded"


def test_prune_follows_activation_history(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    v = [build(store, tiny_encoder) for _ in range(4)]
    for version in v:
        store.activate(version)
    store.activate(v[0])  # a rollback: v0 is active again, v3 was active just before
    never = build(store, tiny_encoder)  # complete but never activated (a crash before activation)
    assert store.prune(keep=2) == [v[1], v[2]]  # this process may still activate `never`: it is pending
    store = VersionStore(tmp_path)  # the next start: nothing is pending
    store.activate(v[3])
    store.activate(v[0])
    pruned = store.prune(keep=2)
    assert pruned == [never]
    assert set(store.versions()) == {v[0], v[3]}
    assert [h["version"] for h in store.history()][:2] == [v[0], v[3]]


def test_start_removes_temporary_leftovers_only(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    served = build(store, tiny_encoder)
    store.activate(served)
    complete = build(store, tiny_encoder)  # complete, never activated: kept (prune decides, by history)
    version, tmp = store.new_version()
    (store.root / ".ACTIVE.123-abcd.tmp").write_text("{")
    assert set(store.cleanup_partial()) == {tmp.name, ".ACTIVE.123-abcd.tmp"}
    assert store.versions() == sorted([served, complete]) and not tmp.exists()


def test_prune_never_takes_a_version_pending_activation(tmp_path, tiny_encoder):
    store = VersionStore(tmp_path)
    for _ in range(3):
        store.activate(build(store, tiny_encoder))
    pending = build(store, tiny_encoder)  # a job built it; its activation is still to come
    store.prune(keep=1)
    assert pending in store.versions()
    store.activate(pending)
    assert store.active() == pending


@pytest.mark.parametrize("pointer", [None, '{"version": "20200101T000000.000000-dead"}', "{garbage", '"x"'])
def test_a_missing_or_bad_pointer_never_deletes_a_version(tmp_path, tiny_encoder, pointer):
    store = VersionStore(tmp_path)
    made = [build(store, tiny_encoder) for _ in range(3)]
    for version in made:
        store.activate(version)
    if pointer is None:
        store.pointer.unlink()
    else:
        store.pointer.write_text(pointer)
    again = VersionStore(tmp_path)  # the next start
    assert again.cleanup_partial() == [] and again.prune(keep=1) == []
    assert again.versions() == sorted(made) and again.active() is None
    _, problem = again.pointer_state()
    assert problem.startswith("versions/ACTIVE ") and str(tmp_path) not in problem
    assert again.newest_versions()[0] == max(made)
    # the first activation after the loss rebuilds a history from the folders: prune keeps `keep` of them
    again.activate(made[0])
    assert again.prune(keep=3) == [] and again.versions() == sorted(made)
    assert again.prune(keep=2) == [made[1]]  # the rebuilt order: made[0] (now active), then newest first


def test_one_process_per_data_dir(tmp_path):
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    first.acquire("a whitevec server", "or send requests to it")
    with pytest.raises(DataDirLocked, match=f"is in use by a whitevec server \\(pid {os.getpid()}\\); stop it "
                                            "first, or send the build to it, or use another --data-dir"):
        second.acquire("`whitevec index build`", "or send the build to it")
    first.release()
    second.acquire("`whitevec index build`", "or send the build to it")
    second.release()


async def test_a_second_server_on_the_same_data_dir_refuses_to_start(settings):
    from whitevec.service.http.app import create_app

    async with serving(settings) as (app, client):
        job = await rebuild(client, {"documents": demo_documents()})
        other = create_app(settings)
        with pytest.raises(DataDirLocked, match="or send requests to the server already running on it") as refused:
            async with other.router.lifespan_context(other):
                pass
        assert "/admin/index/rebuild" not in str(refused.value)  # advice for a build, not for a server
        # the refused server marked nothing: the first one's jobs are as they were
        jobs = (await client.get("/admin/jobs", headers=ADMIN)).json()
        assert [j["state"] for j in jobs] == ["succeeded"] and jobs[0]["id"] == job["id"]


def test_cli_build_beside_a_server_is_refused(settings, tmp_path, capsys):
    from whitevec.service.cli.main import main
    from whitevec.service.engine.runtime import Runtime

    server = Runtime(settings)
    server.lock()
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in demo_documents()))
    assert main(["index", "build", str(path), "--data-dir", str(settings.data_dir)]) == 2
    err = capsys.readouterr().err
    assert "is in use by a whitevec server" in err and "Traceback" not in err and err.count("\n") == 1
    assert "send the build to the running server (POST /admin/index/rebuild)" in err
    server.unlock()


def test_unused_fine_tuned_models_are_pruned(settings, tiny_model_dir, tiny_encoder):
    import time

    from whitevec.service.engine.runtime import Runtime

    settings.keep_models = 1
    rt = Runtime(settings)
    models = settings.data_dir / "models"
    made = []
    for i in range(4):
        folder = models / f"m{i}"
        shutil.copytree(tiny_model_dir, folder)
        (folder / "report.json").write_text("{}")  # written by whitevec's training
        os.utime(folder, (time.time() + i, time.time() + i))
        made.append(folder)
    shutil.copytree(tiny_model_dir, models / "users-own")  # no report.json: never pruned
    (models / ".tmp-m9-123").mkdir()
    rt.open()  # removes the temp folder
    used = build_version(rt.default.versions, type(tiny_encoder)(made[0], device="cpu"), docs(), WhiteningParams(),
                         IndexSpec())
    rt.default.versions.activate(used.version)
    rt.prune_models()
    # m0 is used by a kept version, m3 is the newest unused one, m1 and m2 go, and so does the temp folder
    assert sorted(p.name for p in models.iterdir()) == ["m0", "m3", "users-own"]


def test_a_rebuild_hashes_its_parts_once_and_loads_still_verify(settings, monkeypatch):
    """The rebuild's own activation does not re-read the files it just hashed; any later load does."""
    from whitevec.index import parts, versions
    from whitevec.service.engine.runtime import Runtime

    calls: list[str] = []
    original = parts.file_digest
    for module in (parts, versions):  # where a build hashes its parts, and where a load verifies them
        monkeypatch.setattr(module, "file_digest", lambda path: calls.append(path.name) or original(path))
    rt = Runtime(settings)
    rt.lock()
    rt.load()
    result = rt.default.corpus_builds.rebuild(None, docs(), WhiteningParams(), IndexSpec())
    assert sorted(calls) == ["docs.sqlite", "index.faiss", "lexical.npz", "raw.npy", "whitening.npz"]  # once each, at build
    calls.clear()
    rt.default.versions.load(result["version"], encoder=rt.default.bundle.encoder)
    assert sorted(calls) == ["docs.sqlite", "index.faiss", "lexical.npz", "raw.npy", "whitening.npz"]  # a plain load verifies
    rt.unlock()


async def test_backup_while_serving_keeps_every_acknowledged_change(settings, tmp_path):
    """`whitevec backup` copies change logs with their write-ahead logs; a plain copy of the files loses
    the changes still in the -wal, and the copy's changes.head makes the server refuse that copy."""
    from whitevec.service.cli.main import main

    async with serving(settings) as (app, client):
        (await rebuild(client, {"documents": demo_documents()}))
        version = (await rebuild(client, {"documents": demo_documents(2)}))["result"]["version"]
        r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [
            {"id": f"new{i}", "text": f"added while serving {i}"} for i in range(5)]})
        assert r.status_code == 200
        await client.post("/admin/documents/delete", headers=ADMIN, json={"ids": ["weather-0-0"]})
        assert main(["backup", str(tmp_path / "copy"), "--data-dir", str(settings.data_dir)]) == 0
        shutil.copytree(settings.data_dir, tmp_path / "naive", ignore=shutil.ignore_patterns("*-wal", "*-shm", ".lock"))
    for folder, intact in (("copy", True), ("naive", False)):
        async with serving(settings.model_copy(update={"data_dir": tmp_path / folder})) as (app, client):
            ready = (await client.get("/readyz")).json()
            if intact:
                assert ready["status"] == "ready" and ready["version"] == version
                assert (await client.get("/admin/documents/new4", headers=ADMIN)).status_code == 200
                assert (await client.get("/admin/documents/weather-0-0", headers=ADMIN)).status_code == 404
            else:
                assert ready["status"] == "degraded" and "changes.sqlite" in ready["refused"]["reason"]
