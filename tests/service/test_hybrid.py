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
        for mode in ("dense", "lexical", "hybrid"):  # explaining a search never reorders it
            plain = await search(client, {"query": "the city rain", "k": 5, "mode": mode})
            assert ids(await search(client, {"query": "the city rain", "k": 5, "mode": mode, "explain": True})) \
                == ids(plain), mode
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
    (settings.data_dir / "collections" / "default" / "collection.json").write_text(json.dumps(
        {**json.loads((settings.data_dir / "collections" / "default" / "collection.json").read_text()),
         "search": {"mode": "hybrid"}}))  # a default this version cannot serve: dense, said
    async with serving(settings) as (app, client):
        plain = await search(client, {"query": "rain", "k": 3})
        assert len(ids(plain)) == 3 and "searched dense" in plain["warnings"][0]
        for body in ({"mode": "lexical"}, {"mode": "hybrid"}, {"explain": True}):
            r = await client.post("/search", json={"query": "rain", **body})
            assert r.status_code == 409 and "rebuild" in r.json()["error"]["message"], r.text


def test_the_analyzer_sees_what_the_tests_assume():
    assert analyze("heavy rain in the city") == ["heavy", "rain", "in", "the", "city"]
    assert "天气" in analyze("今天天气不错")


def write_lexical_pairs(folder, name: str = "lexical_pairs.tsv") -> str:
    """Paraphrases that share rare words (a random tiny model cannot see them; BM25 can), and unrelated pairs."""
    rows = [f"report zq{i} on kx{i}\tkx{i} and zq{i} summary\t{4.5}\n" for i in range(16)]
    rows += [f"plain text {i}\tsomething else {i}\t0.5\n" for i in range(8)]
    (folder / name).write_text("".join(rows), encoding="utf-8")
    return name


async def test_auto_search_chooses_on_half_reports_on_the_other_and_becomes_the_default(settings):
    async with serving(settings) as (app, client):
        name = write_lexical_pairs(settings.import_dir)
        job = await rebuild(client, {"documents": demo_documents(), "search": {"auto": {"pairs": name}}})
        assert job["state"] == "succeeded", job
        tuned = job["result"]["search_tuning"]
        assert tuned["choice"]["mode"] in ("lexical", "hybrid") and tuned["split"] == {"choose": 8, "report": 8,
                                                                                       "seed": 0}
        assert {row["candidate"] for row in tuned["table"]} >= {"dense", "lexical", "rrf", "weighted 0.5"}
        assert tuned["held_out"]["hit_at_1"] > tuned["held_out_dense"]["hit_at_1"] and "held-out" in tuned["reason"]
        plot = await client.get(tuned["plot"], headers=ADMIN)
        assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
        assert (await client.get(f"/admin/jobs/{job['id']}/plot.png", headers=ADMIN)).status_code == 200
        # /search without a mode now searches as chosen
        chosen = tuned["choice"]
        plain = await search(client, {"query": "heavy rain", "k": 3})
        explicit = await search(client, {"query": "heavy rain", "k": 3, **chosen})
        assert plain == explicit
        # a later rebuild without auto search keeps the choice
        again = await rebuild(client, {"documents": demo_documents(2)})
        assert await search(client, {"query": "heavy rain", "k": 3}) == await search(
            client, {"query": "heavy rain", "k": 3, **chosen})
        versions = (await client.get("/admin/versions", headers=ADMIN)).json()["versions"]
        assert again["result"]["version"] in {v["version"] for v in versions}


async def test_auto_search_refuses_unusable_pairs_before_the_job(settings):
    async with serving(settings) as (app, client):
        (settings.import_dir / "few.tsv").write_text("a\tb\t5\nc\td\t0\ne\tf\t4.5\ng\th\t1\n")
        for pairs, status in (("missing.tsv", 404), ("few.tsv", 422), ("../x.tsv", 422)):
            r = await client.post("/admin/index/rebuild", headers=ADMIN,
                                  json={"documents": demo_documents(), "search": {"auto": {"pairs": pairs}}})
            assert r.status_code == status and ("search.auto.pairs" in r.text or "import" in r.text), (pairs, r.text)
        r = await client.post("/admin/index/rebuild", headers=ADMIN,
                              json={"documents": demo_documents(), "search": {"auto": {"pairs": "few.tsv", "x": 1}}})
        assert r.status_code == 422


async def test_a_collection_search_setting_is_its_default(settings):
    async with serving(settings) as (app, client):
        r = await client.put("/admin/collections/words", headers=ADMIN,
                             json={"search": {"mode": "lexical", "bm25": {"k1": 2.0, "b": 0.5}}})
        assert r.status_code == 201, r.text
        r = await client.post("/admin/collections/words/rebuild", headers=ADMIN, json={"documents": demo_documents()})
        assert r.status_code == 202, r.text
        from tests.conftest import wait_job
        job = await wait_job(client, r.json()["job_id"])
        manifest = app.state.runtime.collection("words").bundle.manifest
        assert manifest["lexical"]["bm25"] == {"k1": 2.0, "b": 0.5}, job
        r = await client.post("/collections/words/search", json={"query": "heavy rain", "k": 3})
        assert [h["id"] for h in r.json()["results"][0]["hits"]] == ["weather-1-0"]  # lexical: one holds the words
        bad = await client.put("/admin/collections/other", headers=ADMIN, json={"search": {"mode": "fuzzy"}})
        assert bad.status_code == 422
