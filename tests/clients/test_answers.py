"""The SDK's newer surface against the real server: operations routes, job plots, Hits from servers
with and without warnings, as_numpy without numpy, and the old ValidationError name."""

import asyncio
import re
import sys
import warnings

import httpx
import pytest

from tests.clients.conftest import ADMIN, DOCS, KEY
from whitevec_client import AsyncClient, Client, Hits, InvalidRequest, NotFound
from whitevec_client._calls import _hits

EXTRA = "pip install 'whitevec-client[numpy]'"


def test_operations_routes(wv):
    assert wv.health() == {"status": "ok"}
    ready = wv.ready()
    assert ready["limits"]["max_texts"] == 4 and ready["status"] == "ready"
    assert "whitevec_requests" in wv.metrics()
    rebuild = wv.jobs()[-1]  # the fixture's rebuild: no auto whitening, so no plot
    with pytest.raises(NotFound, match="has no plot"):
        wv.job_plot(rebuild.id)

    async def run() -> tuple:
        async with AsyncClient(wv._core.base_url, admin_token=ADMIN) as client:
            return await client.health(), await client.ready(), await client.metrics()
    health, ready_async, metrics = asyncio.run(run())
    assert health == {"status": "ok"} and ready_async["limits"] == ready["limits"] and "whitevec_requests" in metrics


def test_hits_from_an_answer_with_and_without_warnings():
    hit = {"id": "a", "score": 0.5, "text": "t", "metadata": {}}
    now = httpx.Response(200, json={"results": [{"query": "q", "hits": [hit]}], "version": "v2",
                                    "warnings": ['filter key "yaer": no document has this key']})
    before = httpx.Response(200, json={"results": [{"query": "q", "hits": []}, {"query": "r", "hits": [hit]}],
                                       "version": "v1"})
    (got,) = _hits(now)
    assert isinstance(got, Hits) and [h.id for h in got] == ["a"] and got.version == "v2"
    assert got.warnings == ['filter key "yaer": no document has this key'] and "yaer" in repr(got)
    assert [(h.query, h.version, h.warnings, len(h)) for h in _hits(before)] == [("q", "v1", [], 0), ("r", "v1", [], 1)]


def test_as_numpy_without_numpy_names_the_extra_and_sends_nothing(server, monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        sent.append(request.url.path)

    with Client(server, api_key=KEY) as wv:
        wv._http.event_hooks["request"] = [record]
        with pytest.raises(ImportError, match=re.escape(EXTRA)):
            wv.embed(["hello"], as_numpy=True)
        assert sent == []
        assert len(wv.embed(["hello"])) == 1 and sent == ["/readyz", "/embed"]  # the hook sees what is sent

    async def run() -> None:
        async with AsyncClient(server, api_key=KEY) as client:
            async def arecord(request: httpx.Request) -> None:
                sent.append(request.url.path)
            client._http.event_hooks["request"] = [arecord]
            with pytest.raises(ImportError, match=re.escape(EXTRA)):
                await client.collection("default").embed(["hello"], as_numpy=True)
    sent.clear()
    asyncio.run(run())
    assert sent == []


def test_the_old_error_name_still_works_and_warns(wv):
    with pytest.warns(DeprecationWarning, match="InvalidRequest"):
        from whitevec_client import ValidationError
    assert ValidationError is InvalidRequest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from whitevec_client.errors import ValidationError as Old
    with pytest.raises(Old):  # existing `except ValidationError` code still catches refusals
        wv.search(DOCS[0]["text"], k=0)
