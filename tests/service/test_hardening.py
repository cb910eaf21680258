"""Hostile input and failure isolation through the real app (issue 8, "Requests")."""

import asyncio
import json
import threading

import numpy as np
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, demo_documents, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio


def distinct_texts(n: int, prefix: str = "query") -> list[str]:
    """Different texts per request, so a batcher that swapped results would fail the check."""
    words = "the cat dog sat on hello world search vector index model red blue green house car tree".split()
    return [f"{prefix} {words[i % len(words)]} {words[(i * 7 + 3) % len(words)]} {i}" for i in range(n)]


async def test_lone_surrogate_in_v1_is_a_clear_400_and_harms_no_one(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        bad = b'{"input": "\\ud800", "model": "whitevec"}'
        queries = distinct_texts(40)

        async def innocent(q: str):
            return await client.post("/search", json={"query": q, "k": 2})

        answers = await asyncio.gather(
            *[client.post("/v1/embeddings", content=bad, headers={"content-type": "application/json"})
              for _ in range(5)],
            *[innocent(q) for q in queries])
        for r in answers[:5]:
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert "surrogate" in error["message"] and error["type"] == "invalid_request_error"
        assert [r.status_code for r in answers[5:]] == [200] * len(queries)
        assert [r.json()["results"][0]["query"] for r in answers[5:]] == queries


async def test_a_failing_request_fails_alone_in_its_batch(settings):
    """If a model batch fails, its requests are retried one by one: only the guilty one fails.
    The model is held on a first request so the poisoned and the good ones share the next batch."""
    async with serving(settings) as (app, client):
        encoder = app.state.runtime.default.bundle.encoder
        poison = encoder.tokenizer.hf.convert_tokens_to_ids("mat")
        original = encoder.embed_tokens
        hold, batches = threading.Event(), []

        def fragile(ids):
            batches.append(len(ids))
            if len(batches) == 1:
                hold.wait(10)
            if any(poison in row for row in ids):
                raise RuntimeError("this model cannot stand mats")
            return original(ids)

        encoder.embed_tokens = fragile
        first = asyncio.create_task(client.post("/embed", json={"texts": ["hello world"]}))
        while not batches:
            await asyncio.sleep(0.005)
        texts = distinct_texts(30, "good")
        calls = [asyncio.create_task(client.post("/embed", json={"texts": ["the cat sat on the mat"]}))]
        calls += [asyncio.create_task(client.post("/embed", json={"texts": [t]})) for t in texts]
        batcher = app.state.runtime.batcher
        while len(batcher._requests) < 32:  # all admitted behind the held batch
            await asyncio.sleep(0.005)
        hold.set()
        answers = await asyncio.gather(*calls)
        assert (await first).status_code == 200
        assert batches[1] == 31  # they did share one batch, which failed
        assert answers[0].status_code == 500
        assert answers[0].json()["error"]["type"] == "server_error"
        assert [r.status_code for r in answers[1:]] == [200] * len(texts)
        del encoder.embed_tokens
        want = encoder.encode(texts).vectors
        got = np.array([r.json()["embeddings"][0] for r in answers[1:]])
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(got, want, atol=1e-5)  # each request got its own vector back


async def test_a_request_whose_client_left_is_not_encoded(settings):
    """Raw ASGI: the client disconnects while the model is busy with someone else."""
    async with serving(settings) as (app, client):
        seen: list[list[int]] = []
        encoder = app.state.runtime.default.bundle.encoder
        original = encoder.embed_tokens
        entered = threading.Event()

        def recording(ids):
            seen.extend(ids)
            entered.set()
            import time
            time.sleep(0.3)
            return original(ids)

        encoder.embed_tokens = recording
        busy = asyncio.create_task(client.post("/embed", json={"texts": ["hello world"]}))
        await asyncio.to_thread(entered.wait, 5)

        body = json.dumps({"texts": ["a green tree by the river"]}).encode()
        disconnect = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if messages:
                return messages.pop(0)
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/embed", "raw_path": b"/embed", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("whitevec", 80), "root_path": ""}
        gone = asyncio.create_task(app(scope, receive, send))
        await asyncio.sleep(0.05)
        disconnect.set()
        await gone
        assert (await busy).status_code == 200
        await asyncio.sleep(0.4)  # the model is free again; nothing of the gone request may run
        tree = encoder.tokenizer.hf.convert_tokens_to_ids("tree")
        assert not any(tree in row for row in seen)
        assert sent[0]["status"] == 499 and app.state.runtime.batcher.pending == 0
        del encoder.embed_tokens


async def test_a_dead_batcher_makes_the_server_unready_not_hang(settings):
    async with serving(settings) as (app, client):
        batcher = app.state.runtime.batcher

        def broken(now):
            raise RuntimeError("scheduler bug")

        batcher._next_batch = broken
        r = await asyncio.wait_for(client.post("/embed", json={"texts": ["hello"]}), 5)
        assert r.status_code == 503 and "scheduler bug" in r.json()["error"]["message"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "encoder loop stopped" in ready.json()["error"]["message"]
        r = await asyncio.wait_for(client.post("/embed", json={"texts": ["again"]}), 5)
        assert r.status_code == 503


@pytest.mark.parametrize("method,path,body,headers,status,fragment", [
    ("GET", "/nope", None, {}, 404, "no route /nope"),
    ("PUT", "/admin/collections/my/faq", b"{}", {"content-type": "application/json"}, 404,
     "no route /admin/collections/my/faq; if 'my/faq' is meant as a collection name, it cannot be one: use 1 to 63 "
     "lowercase letters"),
    ("POST", "/collections/my/faq/search", b'{"query": "a"}', {"content-type": "application/json"}, 404,
     "if 'my/faq' is meant as a collection name, it cannot be one"),
    ("DELETE", "/embed", None, {}, 405, "DELETE is not allowed on /embed"),
    ("POST", "/embed", b"texts=hello", {"content-type": "application/x-www-form-urlencoded"}, 415,
     "Content-Type: application/json"),
    ("POST", "/embed", b'{"texts": ["a"]}', {}, 415, "no Content-Type"),
    ("POST", "/embed", b"not json", {"content-type": "application/json"}, 400, "not valid JSON"),
    ("POST", "/embed", b"", {"content-type": "application/json"}, 400, "not valid JSON"),
    ("POST", "/embed", b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}", {"content-type": "application/json"},
     400, "nested too deeply"),
    ("POST", "/embed", b'{"texts": ["a\\ud800"]}', {"content-type": "application/json"}, 400, "surrogate"),
    ("POST", "/embed", b'{"texts": ["\\ud83d\\ude00 ok"], "dim": 64, "whiten": false}',
     {"content-type": "application/json"}, 422, "needs whiten: true"),
    ("POST", "/search", b'{"query": "a", "k": NaN}', {"content-type": "application/json"}, 422, "k"),
    ("POST", "/v1/embeddings", b'{"input": [1, 2], "model": "whitevec"}', {"content-type": "application/json"},
     400, "input"),
    ("POST", "/v1/embeddings", b'{"input": ["ok", "  "], "model": "whitevec"}', {"content-type": "application/json"},
     400, "input.1: must contain a non-space character"),
    ("POST", "/v1/embeddings", b'{"input": [], "model": "whitevec"}', {"content-type": "application/json"},
     400, "input"),
    ("POST", "/search", b'{"query": 3}', {"content-type": "application/json"}, 422, "query: must be a string"),
    ("POST", "/embed", b'{"texts": ["ok", "\\u200b\\u0000 \\ufeff"]}', {"content-type": "application/json"}, 422,
     "texts[1] has no character the model reads"),
    ("POST", "/search", b'{"query": "\\u0001\\u00a0\\u3000"}', {"content-type": "application/json"}, 422,
     "query has no character the model reads"),
    ("POST", "/v1/embeddings", b'{"input": "\\ufffd\\u200b", "model": "whitevec"}', {"content-type": "application/json"},
     400, "input has no character the model reads"),
])
async def test_every_error_has_the_documented_shape(settings, method, path, body, headers, status, fragment):
    async with serving(settings) as (app, client):
        r = await client.request(method, path, content=body, headers=headers)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert set(error) == {"type", "message", "param", "code"} and fragment in error["message"], error


async def test_unexpected_exception_is_a_json_500(settings, monkeypatch):
    async with serving(settings) as (app, client):
        monkeypatch.setattr(type(app.state.runtime.default.reports), "ready_report", lambda self: 1 / 0)
        r = await client.get("/readyz")
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error" and "ZeroDivisionError" in r.json()["error"]["message"]
        assert (await client.get("/healthz")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'route="/readyz",status="500"' in metrics


async def test_openapi_declares_error_statuses_and_bearer_auth(settings):
    async with serving(settings) as (app, client):
        spec = (await client.get("/openapi.json")).json()
        for path in ("/embed", "/search", "/v1/embeddings"):
            op = spec["paths"][path]["post"]
            assert {"400", "413", "415", "422", "429", "503"} <= op["responses"].keys(), path
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].startswith("#/components/")
        schemes = spec["components"]["securitySchemes"]
        assert schemes["AdminToken"] == {"type": "http", "scheme": "bearer",
                                         "description": schemes["AdminToken"]["description"]}
        assert {"AdminToken": []} in spec["paths"]["/admin/index/rebuild"]["post"]["security"]
        for path in ("/embed", "/search", "/v1/embeddings", "/collections/{name}/search"):
            # Swagger's Authorize reaches the data routes: the bearer is declared, and optional
            assert spec["paths"][path]["post"]["security"] == [{"ApiKey": []}, {}], path
        assert schemes["ApiKey"]["scheme"] == "bearer"
        for name in ("RebuildRequest", "DocumentIn", "SearchRequest", "EmbeddingsRequest"):
            assert name in spec["components"]["schemas"]


async def test_docs_are_served_without_a_network(settings):
    async with serving(settings) as (app, client):
        html = (await client.get("/docs")).text
        assert "/static/swagger/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            r = await client.get(f"/static/swagger/{asset}")
            assert r.status_code == 200 and len(r.content) > 10_000


@pytest.mark.slow
async def test_large_bodies_are_validated_while_the_event_loop_keeps_running(settings, monkeypatch):
    """A large rebuild body is validated document by document in a worker thread; the event loop
    keeps running meanwhile (a ticker task advances between the first and the last document)."""
    from whitevec.service.http.schemas import DocumentIn

    ticks = {"n": 0}
    seen: list[tuple[int, bool]] = []
    original = DocumentIn.model_validate_json.__func__

    def recording(cls, data, *args, **kwargs):
        seen.append((ticks["n"], threading.current_thread() is threading.main_thread()))
        return original(cls, data, *args, **kwargs)

    monkeypatch.setattr(DocumentIn, "model_validate_json", classmethod(recording))

    async def ticker():
        while True:
            ticks["n"] += 1
            await asyncio.sleep(0.001)

    async with serving(settings) as (app, client):
        docs = [{"id": f"d{i}", "text": f"the cat sat on the mat {i} " * 4} for i in range(20_000)]
        task = asyncio.create_task(ticker())
        r = await client.post("/admin/index/rebuild", json={"documents": docs}, headers=ADMIN)
        task.cancel()
        assert r.status_code == 202
        await wait_job(client, r.json()["job_id"])
        bad = docs[:5000] + [{"id": "x", "text": ""}]
        r = await client.post("/admin/index/rebuild", json={"documents": bad}, headers=ADMIN)
        assert r.status_code == 422 and "documents.5000.text" in r.json()["error"]["message"]
    big = seen[:20_000]
    assert len(big) == 20_000
    assert not any(on_main for _, on_main in big)  # never on the event loop's thread
    assert big[-1][0] > big[0][0]  # the loop ran while the documents were validated


@pytest.mark.parametrize("path,fragment", [
    ("a\x00b.jsonl", "NUL"),
    ("x" * 5000, "characters long"),
    ("y" * 300 + ".jsonl", "cannot be used"),
])
async def test_hostile_import_paths_are_422(settings, path, fragment):
    async with serving(settings) as (app, client):
        r = await client.post("/admin/index/rebuild", json={"path": path}, headers=ADMIN)
        assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("content,fragment", [
    (b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff\xfe bad"}\n', "docs.jsonl:2: not UTF-8"),
    (b'{"id": "a", "text": "ok", "metadata": ' + b'{"x": ' * 3000 + b"1" + b"}" * 3000 + b"}\n",
     "docs.jsonl:1: JSON nested too deeply"),
    (b'{"id": "a", "text": "ok", "metadata": ' + b'{"x": ' * 40 + b"1" + b"}" * 40 + b"}\n",
     "docs.jsonl:1: `metadata` is nested more than 32"),
    (b'{"id": "a", "text": "lone \\ud800 surrogate"}\n{"id": "b", "text": "fine"}\n',
     "docs.jsonl:1: `text` contains a lone surrogate"),
])
async def test_hostile_import_files_are_422(settings, content, fragment):
    async with serving(settings) as (app, client):
        (settings.import_dir / "docs.jsonl").write_bytes(content)
        r = await client.post("/admin/index/rebuild", json={"path": "docs.jsonl"}, headers=ADMIN)
        assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text


async def test_big_requests_do_not_stall_small_ones(settings):
    """Batches are bounded by tokens and the request with the least work left goes first: a small
    request admitted while a large one is being encoded runs in the very next batch."""
    settings.max_batch_tokens = 64
    async with serving(settings) as (app, client):
        order: list[int] = []
        encoder = app.state.runtime.default.bundle.encoder
        original = encoder.embed_tokens
        small_id = encoder.tokenizer.hf.convert_tokens_to_ids("river")
        hold = threading.Event()

        def recording(ids):
            order.append(sum(small_id in row for row in ids))
            if len(order) == 1:
                hold.wait(10)
            return original(ids)

        encoder.embed_tokens = recording
        big = asyncio.create_task(client.post("/embed", json={"texts": [" ".join(["cat"] * 60)] * 40}))
        while not order:
            await asyncio.sleep(0.005)
        small = asyncio.create_task(client.post("/embed", json={"texts": ["river"]}))
        batcher = app.state.runtime.batcher
        while len(batcher._requests) < 2:  # the small one is admitted behind the held batch
            await asyncio.sleep(0.005)
        hold.set()
        assert (await small).status_code == 200 and (await big).status_code == 200
        del encoder.embed_tokens
        # 40 rows of 62 tokens take 40 batches of one row at 64 tokens; "river" ran second
        assert len(order) == 41 and order[1] == 1


async def test_large_training_bodies_are_validated_item_by_item_too(settings):
    """The same path for /admin/train's long lists: an error names the exact item, and the body is not
    parsed on the event loop's thread (the route answers 422 without a job)."""
    examples = [{"text": f"sentence number {i} about the cat", "label": i % 50} for i in range(12_000)]
    pairs = [{"text_a": f"a {i}", "text_b": f"b {i}", "score": 4.5} for i in range(12_000)]
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        bad = examples + [{"text": "ok", "label": [1]}]
        r = await client.post("/admin/train", json={"examples": bad}, headers=ADMIN)
        assert r.status_code == 422 and "examples.12000.label" in r.json()["error"]["message"], r.text
        bad = pairs[:-1] + [{"text_a": "x", "text_b": "y", "score": "high"}]
        r = await client.post("/admin/train", json={"pairs": bad}, headers=ADMIN)
        assert r.status_code == 422 and "pairs.11999.score" in r.json()["error"]["message"], r.text
        r = await client.post("/admin/train", json={"examples": examples, "max_steps": 1}, headers=ADMIN)
        assert r.status_code == 202 and r.json()["classes"] == 50 and r.json()["texts"] == 12_000
        await client.post(f"/admin/jobs/{r.json()['job_id']}/cancel", headers=ADMIN)
        assert (await client.get("/admin/jobs", headers=ADMIN)).status_code == 200


async def test_responses_keep_float32_values_and_huge_integers(settings):
    """Vectors are written by orjson straight from float32 arrays (the same float32 values once
    parsed); integers in metadata come back exact to the 64-bit edge, and one beyond it (or NaN) is a 422
    naming the field, never stored."""
    async with serving(settings) as (app, client):
        docs = demo_documents()
        docs[0]["metadata"] = {"big": 2**63 - 1, "small": -(2**63 - 1), "nested": {"x": [1.5, None, "é", 2**53 + 1]}}
        await rebuild(client, {"documents": docs})
        hits = (await client.post("/search", json={"query": docs[0]["text"], "k": 1})).json()["results"][0]["hits"]
        assert hits[0]["metadata"] == docs[0]["metadata"]
        for bad, field in (('{"big": 1000000000000000000000000000000}', "metadata.big"),
                           ('{"n": NaN}', "metadata.n"), ('{"l": [1, Infinity]}', "metadata.l[1]")):
            body = '{"documents": [{"id": "x", "text": "t", "metadata": %s}]}' % bad
            r = await client.post("/admin/documents", headers={**ADMIN, "Content-Type": "application/json"},
                                  content=body)
            assert r.status_code == 422 and f"`{field}`" in r.json()["error"]["message"], r.text
        assert (await client.get("/admin/documents/x", headers=ADMIN)).status_code == 404
        raw = (await client.post("/embed", json={"texts": ["a red car"], "whiten": False, "normalize": False})).json()
        want = app.state.runtime.default.bundle.encoder.encode(["a red car"]).vectors[0]  # the served engine's own
        assert np.array_equal(np.asarray(raw["embeddings"][0], dtype=np.float32), want)


async def test_a_collection_that_failed_to_load_is_retried_until_it_serves(settings, monkeypatch):
    """A load that fails at start (Milvus briefly down, say) is retried with backoff by the sync thread,
    `default` included, and /readyz says why meanwhile; once it loads, the server is ready."""
    import time

    from whitevec.service.engine import collection as collection_module
    from whitevec.service.engine.collection import Collection

    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
    monkeypatch.setattr(collection_module, "LOAD_RETRY_FIRST_S", 0.2)
    original, failures = Collection._load_best, [2]

    def flaky(self):
        if failures[0]:
            failures[0] -= 1
            raise OSError("the index backend is not reachable yet")
        return original(self)

    monkeypatch.setattr(Collection, "_load_best", flaky)
    app = __import__("whitevec.service.http.app", fromlist=["create_app"]).create_app(
        settings.model_copy(update={"alias_poll_s": 0.1}))
    import httpx

    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
            deadline, seen = time.monotonic() + 30, []
            while time.monotonic() < deadline:
                r = await client.get("/readyz")
                seen.append((r.status_code, r.json().get("error", {}).get("message", "")))
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200 and r.json()["status"] == "ready", seen[-3:]
            assert any("not reachable yet" in message and "retried in" in message for _, message in seen)
            assert failures == [0]
            assert (await client.post("/search", json={"query": "rain"})).status_code == 200


async def test_a_405_names_every_method_the_path_answers(settings):
    """GET and POST on /admin/keys are two routes: the 405 for OPTIONS lists both, header and message."""
    async with serving(settings) as (app, client):
        r = await client.options("/admin/keys", headers=ADMIN)
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
        assert r.json()["error"]["message"] == "OPTIONS is not allowed on /admin/keys; use GET, POST"
        r = await client.delete("/embed")
        assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_the_openai_user_field_is_bounded(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        body = {"input": "hello", "model": "whitevec"}
        assert (await client.post("/v1/embeddings", json={**body, "user": "u-1"})).status_code == 200
        r = await client.post("/v1/embeddings", json={**body, "user": "x" * 5_000_000})
        assert r.status_code == 400 and r.json()["error"]["message"] == "user: must be at most 256 characters"


async def test_a_change_log_that_cannot_be_written_is_a_503_naming_the_file(settings, monkeypatch):
    """A read-only data dir or a full disk (this runs as root, to whom chmod means nothing: the OS error is
    raised where SQLite would raise it): the upsert says which file and what to do, nothing is half done,
    searches go on, and the same upsert succeeds once the disk takes writes again."""
    import sqlite3

    from whitevec.index.changes import ChangeLog

    async with serving(settings) as (app, client):
        version = (await rebuild(client, {"documents": demo_documents()}))["result"]["version"]
        original = ChangeLog._apply

        def readonly(self, *args):
            raise sqlite3.OperationalError("attempt to write a readonly database")

        monkeypatch.setattr(ChangeLog, "_apply", readonly)
        doc = {"documents": [{"id": "new", "text": "rain again"}]}
        r = await client.post("/admin/documents", headers=ADMIN, json=doc)
        assert r.status_code == 503, r.text
        message = r.json()["error"]["message"]
        assert f"versions/{version}/changes.sqlite cannot be written (attempt to write a readonly database)" in message
        assert "write access" in message and str(settings.data_dir) not in message
        assert (await client.post("/search", json={"query": "rain"})).status_code == 200
        assert (await client.get("/admin/documents/new", headers=ADMIN)).status_code == 404
        monkeypatch.setattr(ChangeLog, "_apply", original)
        assert (await client.post("/admin/documents", headers=ADMIN, json=doc)).status_code == 200
        assert (await client.get("/admin/documents/new", headers=ADMIN)).status_code == 200


async def test_a_405_names_the_methods_of_the_most_specific_resource(settings):
    """/admin/documents/delete is a resource of its own (POST), though /admin/documents/{doc_id} (GET) matches it."""
    async with serving(settings) as (app, client):
        for path in ("/admin/documents/delete", "/admin/collections/a/documents/delete"):
            r = await client.options(path, headers=ADMIN)
            assert r.status_code == 405 and r.headers["allow"] == "POST", (path, r.headers.get("allow"))
        r = await client.put("/console", headers=ADMIN)  # outside the published API: from the routes
        assert r.status_code == 405 and "GET" in r.headers["allow"]


def test_the_published_non_empty_rule_is_the_one_the_server_applies():
    """`id`, `text` and queries must hold a character str.strip() keeps: the published pattern says exactly
    that in every regex engine (pydantic's Rust one, Python's, a client's), character by character."""
    import re

    from pydantic import TypeAdapter, ValidationError

    from whitevec.service.http.schemas import VISIBLE, NonEmpty

    check = TypeAdapter(NonEmpty)
    differ = []
    for code in (c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF):
        ch = chr(code)
        try:
            check.validate_python(ch)
            accepted = True
        except ValidationError:
            accepted = False
        if not accepted == bool(ch.strip()) == bool(re.search(VISIBLE, ch)):
            differ.append(hex(code))
    assert not differ


async def test_a_union_field_is_told_what_is_wrong_with_the_value_given(settings):
    """`input` takes a string or a list: an empty string hears about strings only, a list about its items."""
    async with serving(settings) as (app, client):
        for body, said in (({"input": "", "model": "whitevec"}, "input: must not be empty"),
                           ({"input": ["a", " "], "model": "whitevec"}, "input.1: must contain a non-space character"),
                           ({"input": 3, "model": "whitevec"}, "input: must be a string or a list")):
            r = await client.post("/v1/embeddings", json=body)
            assert r.status_code == 400 and r.json()["error"]["message"] == said, r.text


@pytest.mark.parametrize("path,body", [
    ("/embed", {"texts": ["a green tree"]}),
    ("/search", {"query": "a green tree"}),
    ("/v1/embeddings", {"input": "a green tree", "model": "whitevec"}),
    ("/admin/documents", {"documents": [{"id": "x", "text": "a green tree"}]}),
])
@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
async def test_a_client_that_hangs_up_mid_body_is_a_499_not_a_server_error(settings, path, body, sized, caplog):
    """Raw ASGI: part of the body arrives, then the connection closes. That is the client's doing: a 499 in the
    metrics, no 500 and no error in the log, and the next request is answered."""
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        raw = json.dumps(body).encode()
        messages = [{"type": "http.request", "body": raw[:8], "more_body": True}, {"type": "http.disconnect"}]
        sent: list[dict] = []

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {ADMIN_TOKEN}".encode()),
                             *([(b"content-length", str(len(raw)).encode())] if sized else [])],
                 "client": ("127.0.0.1", 1), "server": ("whitevec", 80), "root_path": ""}
        with caplog.at_level("ERROR", logger="whitevec"):
            await app(scope, receive, send)
        assert sent[0]["status"] == 499 and not [r for r in caplog.records if r.levelname == "ERROR"]
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert f'route="{path}",status="499"' in metrics and 'status="500"' not in metrics
        headers = ADMIN if path.startswith("/admin") else {}
        assert (await client.post(path, json=body, headers=headers)).status_code == 200


async def _unread(app, method: str, path: str, headers: dict[str, str], sized: bool) -> int:
    """The status of a raw ASGI request whose body must never be read (its receive() fails the test if called)."""
    read: list[bool] = []

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": b"{not json", "more_body": False}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    raw_headers = [(b"content-type", b"application/json"), *((k.lower().encode(), v.encode()) for k, v in headers.items()),
                   *([(b"content-length", b"9")] if sized else [])]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "headers": raw_headers,
             "client": ("127.0.0.1", 1), "server": ("whitevec", 80), "root_path": ""}
    await app(scope, receive, send)
    assert not read, f"{method} {path}: the body was read before the caller was refused"
    return sent[0]["status"]


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
async def test_a_refused_caller_is_answered_before_its_body_is_read(settings, sized):
    """The credential, then the collection the path names, then the body: a caller who would be refused (401, 403,
    404) learns that first, and the server reads none of a body it would refuse anyway."""
    closed = settings.model_copy(update={"read_access": "keys"})
    async with serving(closed) as (app, client):
        key = (await client.post("/admin/keys", json={"collections": ["default"], "access": "read"},
                                 headers=ADMIN)).json()["key"]
        for path in ("/embed", "/search", "/v1/embeddings", "/collections/default/search", "/admin/documents",
                     "/admin/index/rebuild", "/admin/keys", "/admin/train", "/admin/collections/default/documents"):
            assert await _unread(app, "POST", path, {}, sized) == 401, path
        read_key = {"Authorization": f"Bearer {key}"}
        for path in ("/admin/documents", "/admin/index/rebuild", "/admin/keys", "/admin/train"):
            assert await _unread(app, "POST", path, read_key, sized) == 403, path
        for method, path in (("POST", "/collections/nope/embed"), ("POST", "/collections/nope/search"),
                             ("POST", "/admin/collections/nope/documents"), ("POST", "/admin/collections/nope/index/rebuild"),
                             ("PATCH", "/admin/collections/nope")):
            assert await _unread(app, method, path, ADMIN, sized) == 404, path
        r = await client.post("/embed", content=b"{not json", headers={"content-type": "application/json", **ADMIN})
        assert r.status_code == 400, r.text  # an allowed caller is told what is wrong with its body


async def test_a_chunked_body_over_the_limit_is_a_413_once_read(settings):
    """Without a Content-Length the limit is counted as the route reads the body."""
    small = settings.model_copy(update={"max_body_bytes": 1024})
    async with serving(small) as (app, client):
        async def chunks():
            for _ in range(30):
                yield b" " * 100

        r = await client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "WHITEVEC_MAX_BODY_BYTES" in r.json()["error"]["message"], r.text
        assert (await client.post("/embed", json={"texts": ["still answered"]})).status_code == 200


async def test_a_value_the_server_cannot_serve_names_its_field(settings):
    """`param` names the field to fix, as for every other error: `dim` on /embed, `dimensions` on /v1, the index's
    search knobs over the server's limits."""
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        r = await client.post("/embed", json={"texts": ["a"], "dim": 10_000})
        assert r.status_code == 409 and r.json()["error"]["param"] == "dim", r.text
        r = await client.post("/embed", json={"texts": ["a"], "dim": 4, "whiten": False})
        assert r.status_code == 422 and r.json()["error"]["param"] == "dim", r.text
        r = await client.post("/v1/embeddings", json={"input": "a", "model": "whitevec", "dimensions": 10_000})
        assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions", r.text
        for knob in ("nprobe", "ef_search"):
            r = await client.post("/search", json={"query": "a", knob: 1_000_000_000})
            assert r.status_code == 422 and r.json()["error"]["param"] == knob, r.text


async def test_a_collection_deleted_while_a_request_sent_its_body_is_a_404(settings):
    """The collection is reached before the body is read and leased after: deleted in between, the request
    gets the 404 of a deleted collection, not a 503 that says to retry."""
    from whitevec.service.engine.errors import NotFound
    from whitevec.service.http.access import lease

    async with serving(settings) as (app, client):
        assert (await client.put("/admin/collections/brief", json={}, headers=ADMIN)).status_code == 201
        col = app.state.runtime.collection("brief")
        with lease(col) as t:
            assert t.col is col  # served while it exists
        r = await client.delete("/admin/collections/brief", params={"confirm": "true"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        with pytest.raises(NotFound, match="brief was deleted"):
            with lease(col):
                pass


async def test_the_content_check_of_a_large_request_runs_off_the_event_loop_with_the_same_answer(settings):
    """Over LARGE_TEXTS characters the scan runs in a worker thread; it names the same text."""
    from whitevec.service.http.deps import LARGE_TEXTS

    async with serving(settings) as (app, client):
        texts = ["a" * 20_000] * (LARGE_TEXTS // 20_000 + 1) + ["\u200b" * 20_000]
        r = await client.post("/embed", json={"texts": texts})
        assert r.status_code == 422 and f"texts[{len(texts) - 1}] has no character" in r.text, r.text[:300]
        assert (await client.post("/embed", json={"texts": texts[:-1]})).status_code == 200
