"""The SDK against a real `whitevec serve` on loopback (tiny model), sync and async."""

import asyncio
import datetime
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.clients.conftest import ADMIN, DOCS, KEY
from tests.conftest import TRAIN_EXAMPLES, ServeProcess, demo_documents, free_port
from whitevec_client import (AsyncClient, AuthError, Client, Conflict, Hit, Hits, InvalidRequest, Job, JobFailed,
                             JobProgress, NotFound, NotReady, Overloaded, ServerError, TrainJob)
from whitevec_client._core import Core
from whitevec_client.types import Activated, StoredDocument, Upserted, VersionList

@pytest.mark.slow
def test_embed_splits_requests_and_keeps_order(wv):
    texts = [d["text"] for d in DOCS[:10]]  # 10 texts, server limit 4: three requests
    together = wv.embed(texts)
    one_by_one = [wv.embed([t])[0] for t in texts]
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    arr = wv.embed(texts, dim=4, as_numpy=True)
    assert arr.shape == (10, 4) and arr.dtype == np.float32
    raw = wv.embed(texts[:2], whiten=False, normalize=False)
    assert len(raw[0]) == 32 and abs(np.linalg.norm(raw[0]) - 1) > 1e-3
    with pytest.raises(TypeError, match="list of texts"):
        wv.embed("just one string")


def test_search_single_and_many_in_order(wv):
    hits = wv.search(DOCS[2]["text"], k=3)
    assert isinstance(hits, Hits) and isinstance(hits[0], Hit) and hits[0].id == DOCS[2]["id"] and len(hits) == 3
    assert hits[0].metadata == DOCS[2]["metadata"]
    assert (hits.query, hits.version, hits.warnings) == (DOCS[2]["text"], wv.versions()["active"], [])
    queries = [d["text"] for d in DOCS[:6]]  # split across two requests
    many = wv.search_many(queries, k=2)
    assert [h[0].id for h in many] == [d["id"] for d in DOCS[:6]]
    assert [h.query for h in many] == queries and {h.version for h in many} == {hits.version}
    assert wv.search(queries, k=2) == many  # the older form, a list given to search, still answers list[Hits]
    with pytest.raises(TypeError, match="search_many takes a list"):
        wv.search_many("one query")


def test_hybrid_and_lexical_search_with_explain_sync_and_async(wv, server):
    lexical = wv.search("heavy rain", k=3, mode="lexical", explain=True)
    assert [h.id for h in lexical] == ["weather-1-0"]
    assert lexical[0].explain.lexical.terms == ["heavy", "rain"] and lexical[0].explain.lexical.rank == 1
    hybrid = wv.search("heavy rain", k=5, mode="hybrid", fusion={"method": "weighted", "alpha": 0.4}, explain=True)
    assert len(hybrid) == 5 and hybrid[0].id == "weather-1-0" and hybrid[0].explain.dense is not None
    many = wv.search_many(["heavy rain", "天气", "cat", "train", "city"], k=2, mode="lexical")  # two requests
    assert [h[0].id for h in many[:2]] == ["weather-1-0", "weather-3-0"] and len(many) == 5
    assert wv.search("heavy rain", k=2).__getitem__(0).explain is None  # only when asked
    with pytest.raises(InvalidRequest, match="alpha"):
        wv.search("rain", mode="hybrid", fusion={"method": "weighted", "alpha": 2})  # type: ignore[typeddict-item]

    async def run():
        async with AsyncClient(server, api_key=KEY, admin_token=ADMIN) as client:
            return await client.collection("default").search("heavy rain", k=5, mode="hybrid", explain=True)

    ahits = asyncio.run(run())
    assert [h.id for h in ahits] == [h.id for h in wv.search("heavy rain", k=5, mode="hybrid", explain=True)]


def test_filters_documents_and_versions(wv):
    topic = DOCS[0]["metadata"]["topic"]
    hits = wv.search(DOCS[-1]["text"], k=50, filter={"topic": topic})
    assert hits and all(h.metadata["topic"] == topic for h in hits)
    assert len(hits) == sum(d["metadata"]["topic"] == topic for d in DOCS)
    many = wv.search_many([d["text"] for d in DOCS[:6]], k=1, filter={"topic": {"$in": [topic]}})
    assert all(h[0].metadata["topic"] == topic for h in many)
    typo = wv.search(DOCS[0]["text"], k=5, filter={"topik": topic})
    assert typo == [] and any('"topik"' in w for w in typo.warnings), typo.warnings
    doc = wv.get_document(DOCS[3]["id"])
    assert (doc["id"], doc["text"], doc["metadata"]) == (DOCS[3]["id"], DOCS[3]["text"], DOCS[3]["metadata"])
    assert set(doc) == set(StoredDocument.__required_keys__)  # passages: only with passages
    with pytest.raises(NotFound, match="no document"):
        wv.get_document("nope/../x")
    listed = wv.versions()
    assert listed["active"] == listed["versions"][0]["version"]
    if len(listed["versions"]) > 1:
        older = listed["versions"][1]["version"]
        activated = wv.activate(older)
        assert activated["active"] == older and set(activated) == set(Activated.__annotations__)
        assert wv.versions()["active"] == older
        wv.activate(listed["active"])  # and back
    with pytest.raises(NotFound):
        wv.activate("20990101T000000.000000-beef")
    done = wv.upsert([{"id": "sdk-new", "text": "an upserted sentence about owls", "metadata": {"topic": "owls"}}])
    assert set(done) == set(Upserted.__annotations__) and set(listed) == set(VersionList.__annotations__)
    assert done["upserted"] == 1 and wv.search("owls", k=1, filter={"topic": "owls"})[0].id == "sdk-new"
    assert wv.delete(["sdk-new", "nope"]) == {"deleted": 1, "missing": ["nope"], "version": wv.versions()["active"]}
    with pytest.raises(TypeError, match="list of documents"):
        wv.upsert({"id": "x", "text": "y"})

    async def run():
        async with AsyncClient(wv._core.base_url, api_key=KEY, admin_token=ADMIN) as client:
            await client.upsert([{"id": "sdk-async", "text": "an async owl"}])
            assert (await client.get_document("sdk-async"))["text"] == "an async owl"
            assert (await client.delete(["sdk-async"]))["deleted"] == 1
            return (await client.search(DOCS[0]["text"], k=2, filter={"topic": topic}),
                    await client.get_document(DOCS[0]["id"]), await client.versions())
    ahits, adoc, aversions = asyncio.run(run())
    assert all(h.metadata["topic"] == topic for h in ahits) and adoc["id"] == DOCS[0]["id"]
    assert aversions["active"] == wv.versions()["active"]


@pytest.mark.slow
def test_jobs_train_wait_and_cancel(wv, capsys):
    job = wv.train(examples=TRAIN_EXAMPLES, epochs=3, batch_size=6, lr=1e-3)
    assert isinstance(job, TrainJob) and job.kind == "train"
    assert job.classes >= 2 and job.texts == len(TRAIN_EXAMPLES) and job.warnings == [] and job.model_name
    done = wv.wait(job, timeout=300, progress=True, poll=0.2)
    assert done.state == "succeeded" and done.result["report"]["steps"] == 6
    assert "train" in capsys.readouterr().err  # the tqdm bar was drawn
    assert done.id in [j.id for j in wv.jobs()] and wv.job(done.id).state == "succeeded"

    long = wv.train(examples=TRAIN_EXAMPLES, epochs=100_000)
    deadline = time.monotonic() + 120
    while wv.job(long.id).progress.done < 1:
        assert time.monotonic() < deadline, "the training job never reported a step"
        time.sleep(0.05)
    assert wv.cancel(long.id).id == long.id
    with pytest.raises(JobFailed, match="cancelled") as failed:
        wv.wait(long.id, progress=False, poll=0.1)
    assert failed.value.job.state == "cancelled" and failed.value.job.error


def test_wait_times_out(wv):
    job = wv.train(examples=TRAIN_EXAMPLES, epochs=100_000)
    with pytest.raises(TimeoutError, match="still"):
        wv.wait(job, timeout=0.3, progress=False, poll=0.1)
    wv.cancel(job.id)
    with pytest.raises(JobFailed):
        wv.wait(job, progress=False, poll=0.1)


def test_error_classes(server, wv):
    with pytest.raises(InvalidRequest, match="texts") as bad:
        wv.embed([""])
    assert bad.value.status == 422 and bad.value.param.startswith("texts")
    with pytest.raises(InvalidRequest, match="above the limit"):
        wv.search("cat", k=1000)
    for call, field in ((lambda: wv.search("cat", nprobe=0), "nprobe"), (lambda: wv.search_many(["cat"], ef_search=0),
                         "ef_search"), (lambda: wv.train(examples=TRAIN_EXAMPLES, warmup=1.5), "warmup")):
        with pytest.raises(InvalidRequest) as refused:  # the field reached the server, which checked it
            call()
        assert refused.value.param == field, refused.value.message
    with pytest.raises(InvalidRequest, match="duplicate document ids"):
        wv.rebuild_index(documents=[{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(NotFound) as missing:
        wv.job("nope")
    assert missing.value.status == 404 and isinstance(missing.value, InvalidRequest)
    with Client(server, api_key="wrong", admin_token="wrong", retries=0) as bad_auth:
        with pytest.raises(AuthError) as auth:
            bad_auth.search("cat")
        assert auth.value.status == 401
        with pytest.raises(AuthError):
            bad_auth.jobs()
    with Client(server, retries=0) as no_key:
        with pytest.raises(AuthError, match="WHITEVEC_API_KEY"):
            no_key.embed(["x"])


def test_connection_errors_are_server_errors_after_retries():
    with Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01) as down:
        with pytest.raises(ServerError, match="could not reach"):
            down.search("x")
    assert isinstance(Core.error_for(httpx.Response(500, json={"error": {"message": "boom"}})), ServerError)
    assert isinstance(Core.error_for(httpx.Response(502, text="bad gateway")), ServerError)


@pytest.mark.slow
def test_not_ready_when_the_model_cannot_load(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    proc = ServeProcess(["--model", str(broken)], {"WHITEVEC_DATA_DIR": str(tmp_path / "d")}, ready=False)
    try:
        with Client(proc.base, retries=1, backoff=0.01) as wv:
            with pytest.raises(NotReady, match="has no weights"):
                wv.embed(["x"])
    finally:
        proc.stop()


@pytest.mark.slow
def test_overloaded_and_retries_on_429(tmp_path, tiny_model_dir):
    proc = ServeProcess(["--model", str(tiny_model_dir)], {
        "WHITEVEC_DATA_DIR": str(tmp_path / "d"), "WHITEVEC_MAX_QUEUE_TOKENS": "1"})

    texts = [[f"hello {w}", f"world {w}"] for w in "cat dog sun rain car tree city river house mat".split() * 2]

    async def burst(retries: int):
        async with AsyncClient(proc.base, retries=retries, backoff=0.05) as wv:
            await wv.embed(["warm up"])
            return await asyncio.gather(*[wv.embed(t) for t in texts], return_exceptions=True)
    try:
        results = asyncio.run(burst(0))
        overloaded = [r for r in results if isinstance(r, Overloaded)]
        assert overloaded and overloaded[0].retry_after == 1.0 and overloaded[0].status == 429
        assert all(isinstance(r, (list, Overloaded)) for r in results)
        retried = asyncio.run(burst(12))
        assert all(isinstance(r, list) and len(r) == 2 for r in retried)
        with Client(proc.base) as wv:  # each caller got its own texts' vectors back
            np.testing.assert_allclose(np.array(retried), np.array([wv.embed(t) for t in texts]), atol=1e-5)
    finally:
        proc.stop()


@pytest.mark.slow
def test_split_embed_never_mixes_versions(server):
    """A rebuild that lands between the chunks of one embed(): the client retries rather than
    return vectors from two spaces; if it keeps changing, VersionChanged."""
    from whitevec_client import VersionChanged

    texts = [d["text"] for d in DOCS[:10]]  # three requests at the server's limit of 4
    switches = {"left": 1}

    def rebuild_between_chunks(response: httpx.Response) -> None:
        if response.request.url.path == "/embed" and switches["left"] > 0:
            switches["left"] -= 1
            with Client(server, api_key=KEY, admin_token=ADMIN) as admin:
                admin.wait(admin.rebuild_index(documents=DOCS, whitening={"beta": 1, "gamma": 1, "dim": 8}),
                           progress=False)

    with Client(server, api_key=KEY, admin_token=ADMIN) as wv:
        wv._http.event_hooks["response"] = [rebuild_between_chunks]
        got = wv.embed(texts)
        assert switches["left"] == 0
        wv._http.event_hooks["response"] = []
        np.testing.assert_allclose(got, wv.embed(texts), atol=1e-5)  # all from the new version
        switches["left"] = 100
        wv._http.event_hooks["response"] = [rebuild_between_chunks]
        wv._core.retries = 1
        with pytest.raises(VersionChanged, match="switched versions"):
            wv.embed(texts)


def test_only_idempotent_calls_retry():
    core = Core("http://x", None, None, retries=3, backoff=0.1)
    busy = Overloaded("full", 429, retry_after=2.0)
    assert 2.0 <= core.retry_delay(0, busy, retry=True) <= 3.0  # Retry-After, plus jitter
    assert core.retry_delay(0, busy, retry=False) is None
    assert core.retry_delay(3, busy, retry=True) is None
    assert core.retry_delay(0, InvalidRequest("bad", 422), retry=True) is None


def test_async_client_has_the_same_methods(server):
    async def run():
        async with AsyncClient(server, api_key=KEY, admin_token=ADMIN) as wv:
            texts = [d["text"] for d in DOCS[:6]]
            vectors = await wv.embed(texts)
            hits = await wv.search_many(texts, k=1)
            job = await wv.wait(await wv.rebuild_index(documents=DOCS, whitening={"dim": 8}), progress=False)
            jobs = await wv.jobs()
            return vectors, hits, job, jobs
    vectors, hits, job, jobs = asyncio.run(run())
    assert len(vectors) == 6 and [h[0].id for h in hits] == [d["id"] for d in DOCS[:6]]
    assert job.state == "succeeded" and job.id in [j.id for j in jobs]
    sync_methods = {m for m in dir(Client) if not m.startswith("_")}
    assert sync_methods == {m for m in dir(AsyncClient) if not m.startswith("_")}
    from whitevec_client import AsyncCollection, Collection

    handle = {m for m in dir(Collection) if not m.startswith("_")}
    assert handle == {m for m in dir(AsyncCollection) if not m.startswith("_")}
    assert {"search", "search_many", "embed", "upsert", "delete", "get_document", "rebuild_index", "versions",
            "activate"} <= handle


def test_environment_variables(server, monkeypatch):
    monkeypatch.setenv("WHITEVEC_URL", server)
    monkeypatch.setenv("WHITEVEC_API_KEY", KEY)
    monkeypatch.setenv("WHITEVEC_ADMIN_TOKEN", ADMIN)
    with Client() as wv:
        assert wv.search(DOCS[0]["text"], k=1)[0].id == DOCS[0]["id"]
        assert wv.jobs()


def test_types_agree_with_the_server_openapi(settings):
    from whitevec.service.http.app import create_app

    spec = create_app(settings).openapi()["components"]["schemas"]

    def shape(schema: dict, defs: dict) -> dict:
        def kind(p: dict) -> object:
            if "$ref" in p:
                return p["$ref"].split("/")[-1].replace("JobOut", "Job")
            if "anyOf" in p:
                return sorted(str(kind(x)) for x in p["anyOf"])
            return (p.get("type"), tuple(p.get("enum", ())))
        return {name: kind(p) for name, p in schema["properties"].items()}

    for ours, theirs in [(Hit, "Hit"), (JobProgress, "JobProgress"), (Job, "JobOut")]:
        mine = ours.model_json_schema(ref_template="#/components/schemas/{model}")
        assert shape(mine, {}) == shape(spec[theirs], {}), ours.__name__
        assert set(mine.get("required", [])) == set(spec[theirs].get("required", [])), ours.__name__


def test_client_distribution_is_light():
    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "clients" / "pyproject.toml").read_text())
    assert {d.split(">")[0].split("=")[0] for d in meta["project"]["dependencies"]} == {"httpx", "pydantic"}
    code = "import sys, whitevec_client; assert not {'torch', 'faiss', 'fastapi', 'whitevec.models', 'whitevec.service'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_collections_and_access_keys_through_the_sdk(server):
    from whitevec_client import Collection

    docs = [dict(d, id="faq-" + d["id"]) for d in demo_documents(2)]
    with Client(server, admin_token=ADMIN) as admin:
        made = admin.create_collection("sdk-faq", whitening={"beta": 0, "gamma": 0, "dim": 16})
        assert made["documents"] == 0 and made["whitening"]["dim"] == 16
        faq = admin.collection("sdk-faq")
        assert isinstance(faq, Collection)
        job = admin.wait(faq.rebuild_index(documents=docs), progress=False)
        assert job.state == "succeeded" and job.collection == "sdk-faq"
        assert [j.collection for j in admin.jobs(collection="sdk-faq")] == ["sdk-faq"]
        assert all(h.id.startswith("faq-") for h in faq.search("rain", k=5))
        assert len(faq.embed(["x"])[0]) == 16
        assert faq.upsert([{"id": "faq-new", "text": "a new answer"}])["upserted"] == 1
        assert faq.get_document("faq-new")["text"] == "a new answer"
        assert faq.delete(["faq-new"])["deleted"] == 1
        second = admin.wait(faq.rebuild_index(reencode=False, whitening={"dim": 8}), progress=False)
        assert len(faq.embed(["x"])[0]) == 8
        listed = faq.versions()
        assert listed["active"] == second.result["version"] and len(listed["versions"]) == 2
        assert faq.activate(job.result["version"])["active"] == job.result["version"]
        assert "sdk-faq" in {c["name"] for c in admin.collections()}
        assert admin.get_collection("sdk-faq")["whitening"]["dim"] == 16  # the version activated again
        key = admin.create_key(["sdk-faq"], "write", name="sdk test")
        assert key["key"] not in str(admin.keys())
    with Client(server, api_key=key["key"]) as tenant:
        mine = tenant.collection("sdk-faq")
        assert mine.search("rain", k=1)[0].id.startswith("faq-")
        assert mine.upsert([{"id": "faq-t", "text": "from the tenant"}])["upserted"] == 1
        with pytest.raises(NotFound):
            tenant.search("rain")  # the default collection is not the key's
        with pytest.raises(AuthError):
            tenant.collections()
    with Client(server, admin_token=ADMIN) as admin:
        assert admin.revoke_key(key["id"]) == {"revoked": key["id"]}
        with pytest.raises(Conflict, match=r"pass confirm=True to delete it and them") as refused:
            admin.delete_collection("sdk-faq")  # the fix said as the Python call takes it, not as a query string
        assert "?confirm" not in refused.value.message
        assert admin.delete_collection("sdk-faq", confirm=True) == {"deleted": "sdk-faq", "documents": len(docs) + 1}
    with Client(server, api_key=key["key"]) as tenant, pytest.raises(AuthError):
        tenant.collection("sdk-faq").search("rain")


def test_collections_with_passages_through_the_sdk(server):
    from whitevec_client import PassageHit

    long = " ".join(f"the {w} sat on the mat." for w in ["cat", "dog", "car", "tree", "river", "house"] * 3)
    docs = [{"id": "long", "text": long}, {"id": "short", "text": "hello world"},
            {"id": "other", "text": "the sun is red. rain on the city. " * 4}]
    with Client(server, admin_token=ADMIN) as admin:
        made = admin.create_collection("sdk-long", passages={"max_tokens": 12, "overlap": 2})
        assert made["passages"] == {"max_tokens": 12, "overlap": 2}
        col = admin.collection("sdk-long")
        job = admin.wait(col.rebuild_index(documents=docs), progress=False)
        assert job.result["documents"] == 3 and job.result["passages"]["rows"] > 3
        hits = col.search("river sat on the mat", k=3)
        assert [h.id for h in hits].count("long") == 1 and len(hits) == 3
        top = next(h for h in hits if h.id == "long")
        assert isinstance(top.passages[0], PassageHit) and top.passage_texts()[0] == long[top.passages[0].start:
                                                                                          top.passages[0].end]
        assert len(col.search("river", k=10, group="none")) == 10
        stored = col.get_document("long")
        assert stored["text"] == long and len(stored["passages"]) > 2
        changed = admin.set_passages("sdk-long", {"max_tokens": 30})
        assert changed["passages"]["max_tokens"] == 30 and changed["next"].startswith("the next rebuild")
        again = admin.wait(col.rebuild_index(reencode=False), progress=False)
        assert again.result["resplit"].startswith("split anew")
        assert admin.delete_collection("sdk-long", confirm=True)["documents"] == 3


def test_async_collections_and_keys(server):
    async def main() -> None:
        async with AsyncClient(server, admin_token=ADMIN) as admin:
            await admin.create_collection("sdk-async")
            col = admin.collection("sdk-async")
            job = await admin.wait(await col.rebuild_index(documents=DOCS), progress=False)
            assert job.collection == "sdk-async"
            assert [h.query for h in await col.search_many(["rain", "cats"], k=2)] == ["rain", "cats"]
            assert (await admin.get_collection("sdk-async"))["documents"] == len(DOCS)
            key = await admin.create_key(["sdk-async"], "read")
            assert [k["id"] for k in await admin.keys()][-1] == key["id"]
            async with AsyncClient(server, api_key=key["key"]) as tenant:
                assert len(await tenant.collection("sdk-async").embed(["x"])) == 1
            await admin.revoke_key(key["id"])
            assert (await admin.delete_collection("sdk-async", confirm=True))["deleted"] == "sdk-async"
    asyncio.run(main())


def test_cli_collections_against_a_running_server(server, monkeypatch, capsys, tmp_path):
    import json as _json

    from whitevec.service.cli.main import main

    def fails(argv: list[str], fragment: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err, err

    monkeypatch.delenv("WHITEVEC_ADMIN_TOKEN", raising=False)
    nowhere = tmp_path / "no-data"
    fails(["collections", "list", "--url", server, "--data-dir", str(nowhere)], "no admin token: set WHITEVEC_ADMIN_TOKEN")
    kept = tmp_path / "kept"  # a data dir whose admin_token a server generated: read from there
    kept.mkdir()
    (kept / "admin_token").write_text(ADMIN + "\n")
    assert main(["collections", "list", "--url", server, "--data-dir", str(kept), "--json"]) == 0
    assert "collections" in _json.loads(capsys.readouterr().out)
    monkeypatch.setenv("WHITEVEC_ADMIN_TOKEN", ADMIN)
    assert main(["collections", "create", "cli-made", "--url", server, "--dim", "8", "--beta", "1"]) == 0
    made = _json.loads(capsys.readouterr().out)
    assert made["name"] == "cli-made" and made["whitening"]["dim"] == 8
    assert main(["collections", "list", "--url", server]) == 0
    table = capsys.readouterr().out
    assert "cli-made" in table and table.splitlines()[0].split()[:3] == ["name", "documents", "dim"]
    assert main(["collections", "list", "--url", server, "--json"]) == 0
    assert "cli-made" in {c["name"] for c in _json.loads(capsys.readouterr().out)["collections"]}
    fails(["collections", "create", "Bad", "--url", server], "422: collection name 'Bad'")
    assert main(["collections", "create", "cli-long", "--url", server, "--passages", "20:4"]) == 0
    assert _json.loads(capsys.readouterr().out)["passages"] == {"max_tokens": 20, "overlap": 4}
    assert main(["collections", "create", "cli-max", "--url", server, "--passages"]) == 0
    assert _json.loads(capsys.readouterr().out)["passages"]["max_tokens"] > 20  # the model's max length
    fails(["collections", "create", "cli-x", "--url", server, "--passages", "20:30"], "passages.overlap")
    with pytest.raises(SystemExit):
        main(["collections", "create", "cli-y", "--url", server, "--passages", "many"])
    for name in ("cli-long", "cli-max"):
        assert main(["collections", "delete", name, "--url", server, "--yes"]) == 0
    capsys.readouterr()
    fails(["collections", "delete", "cli-made", "--url", server], "add --yes")
    assert main(["collections", "delete", "cli-made", "--url", server, "--yes"]) == 0
    assert _json.loads(capsys.readouterr().out) == {"deleted": "cli-made", "documents": 0}
    fails(["collections", "list", "--url", f"http://127.0.0.1:{free_port()}"], "no whitevec server answers")


def test_answers_from_a_proxy_are_read_not_raised_on():
    """A Retry-After given as an HTTP date, an error body that is a plain string, 502/504 from a proxy: each
    becomes the right exception (never one raised inside error_for), and idempotent calls retry 502/504."""
    import email.utils

    when = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30),
                                       usegmt=True)
    busy = Core.error_for(httpx.Response(429, headers={"Retry-After": when}, json={"error": "slow down"}))
    assert isinstance(busy, Overloaded) and 25 <= busy.retry_after <= 31 and str(busy).startswith("slow down")
    odd = Core.error_for(httpx.Response(429, headers={"Retry-After": "soon"}, text="<html>busy</html>"))
    assert isinstance(odd, Overloaded) and odd.retry_after is None
    plain = Core.error_for(httpx.Response(400, json={"error": "bad thing"}))
    assert isinstance(plain, InvalidRequest) and "bad thing" in str(plain)
    core = Core("http://x", None, None, retries=3, backoff=0.01)
    for status in (502, 504):
        gateway = Core.error_for(httpx.Response(status, text="upstream timed out"))
        assert isinstance(gateway, ServerError) and core.retry_delay(0, gateway, retry=True) is not None
        assert core.retry_delay(0, gateway, retry=False) is None  # a write is never sent twice
    assert core.retry_delay(0, Core.error_for(httpx.Response(500, text="boom")), retry=True) is None


def test_wait_closes_its_progress_bar_when_the_server_goes_away(monkeypatch):
    """tqdm bars left open pile up in notebooks: however wait() ends, its bar is closed."""
    closed = []

    class Bar:
        total, n = None, 0

        def refresh(self):
            pass

        def set_postfix(self, **kw):
            pass

        def close(self):
            closed.append(True)

    monkeypatch.setattr(Core, "progress_bar", staticmethod(lambda job, progress: Bar()))
    with Client(f"http://127.0.0.1:{free_port()}", retries=0) as wv:
        job = Job(id="j1", kind="rebuild", state="running", progress={"done": 0, "total": 2}, created_at="x",
                  started_at=None, finished_at=None, error=None, result=None)
        calls = iter([job])
        monkeypatch.setattr(wv, "job", lambda job_id: next(calls))  # then StopIteration: the server is gone
        with pytest.raises(StopIteration):
            wv.wait("j1", poll=0)
    assert closed == [True]
