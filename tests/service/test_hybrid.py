"""Hybrid search through the HTTP API: the modes, fusion, explain, filters on both sides, changes seen
lexically at once and after a restart, rollback, and bad input as clear 4xx answers."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ADMIN, demo_documents, rebuild, serving
from whitevec.index.analyzer import analyze

pytestmark = pytest.mark.anyio


async def search(client, body: dict, status: int = 200) -> dict:
    r = await client.post("/search", json=body)
    assert r.status_code == status, r.text
    return r.json()


def ids(answer: dict) -> list[str]:
    return [h["id"] for h in answer["results"][0]["hits"]]


async def test_modes_fusion_and_explain(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        dense = await search(client, {"query": "heavy rain", "k": 5})
        assert await search(client, {"query": "heavy rain", "k": 5, "mode": "dense"}) == dense  # the default
        assert "explain" not in dense["results"][0]["hits"][0]

        lexical = await search(client, {"query": "heavy rain", "k": 5, "mode": "lexical"})
        assert ids(lexical) == ["weather-1-0"]  # the one document holding either word
        chinese = await search(client, {"query": "天气", "k": 3, "mode": "lexical", "explain": True})
        top = chinese["results"][0]["hits"][0]
        assert top["id"] == "weather-3-0" and top["explain"]["lexical"]["terms"] == ["天气"]
        assert top["explain"]["lexical"]["rank"] == 1 and top["score"] == top["explain"]["lexical"]["score"]

        for fusion in ({"method": "rrf", "k": 60}, {"method": "weighted", "alpha": 0.3}, None):
            body = {"query": "heavy rain", "k": 5, "mode": "hybrid", "explain": True,
                    **({"fusion": fusion} if fusion else {})}
            hybrid = await search(client, body)
            hits = hybrid["results"][0]["hits"]
            assert len(hits) == 5 and hits[0]["id"] == "weather-1-0"  # found by both sides
            assert hits[0]["explain"]["dense"] is not None and hits[0]["explain"]["lexical"] is not None
            assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        rrf = (await search(client, {"query": "heavy rain", "k": 5, "mode": "hybrid", "explain": True}))
        first = rrf["results"][0]["hits"][0]["explain"]
        assert rrf["results"][0]["hits"][0]["score"] == pytest.approx(
            1 / (60 + first["dense"]["rank"]) + 1 / (60 + first["lexical"]["rank"]))
        only_dense = await search(client, {"query": "heavy rain", "k": 5, "mode": "hybrid",
                                           "fusion": {"method": "weighted", "alpha": 1.0}})
        assert ids(only_dense)[:1] == ids(dense)[:1]


async def test_filters_apply_to_both_sides(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        for mode in ("lexical", "hybrid"):
            got = await search(client, {"query": "the city", "k": 10, "mode": mode, "filter": {"topic": "travel"}})
            assert got["results"][0]["hits"] and all(h["metadata"]["topic"] == "travel"
                                                     for h in got["results"][0]["hits"])
        hybrid = await search(client, {"query": "the city", "k": 4, "mode": "hybrid", "filter": {"topic": "animals"}})
        assert len(ids(hybrid)) == 4  # k hits whenever k match, though the lexical side finds fewer


async def test_writes_are_searchable_lexically_at_once_and_after_a_restart(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        r = await client.post("/admin/documents", headers=ADMIN, json={"documents": [
            {"id": "new", "text": "zebra crossing near the 火车站"}, {"id": "weather-1-0", "text": "sunny all week"}]})
        assert r.status_code == 200, r.text
        assert ids(await search(client, {"query": "zebra 火车站", "k": 3, "mode": "lexical"})) == ["new"]
        assert "weather-1-0" not in ids(await search(client, {"query": "heavy rain", "k": 3, "mode": "lexical"}))
        assert ids(await search(client, {"query": "sunny", "k": 3, "mode": "lexical"})) == ["weather-1-0"]
        r = await client.post("/admin/documents/delete", headers=ADMIN, json={"ids": ["new"]})
        assert r.json()["deleted"] == 1
        assert ids(await search(client, {"query": "zebra", "k": 3, "mode": "lexical"})) == []
        await client.post("/admin/documents", headers=ADMIN, json={"documents": [{"id": "kept", "text": "okapi"}]})
    async with serving(settings) as (app, client):  # the change log replays into the lexical view too
        assert ids(await search(client, {"query": "okapi", "k": 3, "mode": "lexical"})) == ["kept"]
        assert ids(await search(client, {"query": "sunny", "k": 3, "mode": "lexical"})) == ["weather-1-0"]
        assert ids(await search(client, {"query": "zebra", "k": 3, "mode": "lexical"})) == []


async def test_a_rollback_serves_the_old_lexical_index(settings):
    async with serving(settings) as (app, client):
        first = await rebuild(client, {"documents": [{"id": "a", "text": "aardvark burrow"}, {"id": "b", "text": "x"}]})
        await rebuild(client, {"documents": [{"id": "c", "text": "capybara river"}, {"id": "d", "text": "y"}],
                               "confirm_shrink": True})
        assert ids(await search(client, {"query": "aardvark capybara", "k": 3, "mode": "lexical"})) == ["c"]
        r = await client.post(f"/admin/versions/{first['result']['version']}/activate", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert ids(await search(client, {"query": "aardvark capybara", "k": 3, "mode": "lexical"})) == ["a"]


async def test_bad_input_is_a_clear_4xx_or_a_warning(settings):
    async with serving(settings) as (app, client):
        await rebuild(client, {"documents": demo_documents()})
        for body, needle in (({"mode": "fuzzy"}, "mode"), ({"mode": "hybrid", "fusion": {"method": "max"}}, "method"),
                             ({"mode": "hybrid", "fusion": {"method": "weighted", "alpha": 1.5}}, "alpha"),
                             ({"mode": "hybrid", "fusion": {"method": "rrf", "alpha": 0.5}}, "alpha"),
                             ({"explain": "yes"}, "explain")):
            r = await client.post("/search", json={"query": "rain", **body})
            assert r.status_code == 422 and needle in r.text, (body, r.text)
        empty = await search(client, {"query": "!!! ？？", "k": 3, "mode": "hybrid"})
        assert len(ids(empty)) == 3 and "no words" in empty["warnings"][0]
        none = await search(client, {"query": "...", "k": 3, "mode": "lexical"})
        assert ids(none) == [] and "no words" in none["warnings"][0]
        long = await search(client, {"query": "rain " * 3000 + "天气" * 2000, "k": 3, "mode": "hybrid"})
        assert len(ids(long)) == 3
        for hostile in ('"rain\\ud800"', '"rain\\u0000天气"'):  # a lone surrogate and a NUL, as JSON escapes
            raw = '{"query": %s, "k": 3, "mode": "hybrid", "explain": true}' % hostile
            r = await client.post("/search", content=raw.encode(), headers={"Content-Type": "application/json"})
            assert r.status_code in (200, 400), r.text  # never a 500


async def test_a_version_built_before_lexical_indexes_asks_for_a_rebuild(settings):
    async with serving(settings) as (app, client):
        built = await rebuild(client, {"documents": demo_documents()})
    folder = settings.data_dir / "collections" / "default" / "versions" / built["result"]["version"]
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("lexical")  # as versions were written before hybrid search
    manifest["parts"].pop("lexical.npz")
    (folder / "lexical.npz").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    async with serving(settings) as (app, client):
        assert len(ids(await search(client, {"query": "rain", "k": 3}))) == 3  # dense answers as before
        for body in ({"mode": "lexical"}, {"mode": "hybrid"}, {"explain": True}):
            r = await client.post("/search", json={"query": "rain", **body})
            assert r.status_code == 409 and "rebuild" in r.json()["error"]["message"], r.text


def test_the_analyzer_sees_what_the_tests_assume():
    assert analyze("heavy rain in the city") == ["heavy", "rain", "in", "the", "city"]
    assert "天气" in analyze("今天天气不错")
