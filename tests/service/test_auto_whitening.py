"""Auto whitening through the service: a rebuild tunes (β, γ, dim) on labelled pairs and serves the choice."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import ADMIN, demo_documents, rebuild, serving, wait_job

pytestmark = pytest.mark.anyio


def write_pairs(folder, name: str = "pairs.tsv") -> str:
    """Same-topic pairs score high, cross-topic pairs low: enough labelled pairs to split in two."""
    docs = demo_documents(2)
    rows = []
    for x, y in itertools.combinations(docs, 2):
        if x["text"] != y["text"]:
            same = x["metadata"]["topic"] == y["metadata"]["topic"]
            rows.append(f"{x['text']}\t{y['text']}\t{4.5 if same else 0.5}\n")
    (folder / name).write_text("".join(rows[::3]), encoding="utf-8")
    return name


async def test_a_rebuild_with_auto_whitening_serves_the_choice_and_records_it(settings):
    async with serving(settings) as (app, client):
        pairs = write_pairs(settings.import_dir)
        job = await rebuild(client, {"documents": demo_documents(3), "whitening": {"auto": {"pairs": pairs}}})
        assert job["state"] == "succeeded", job
        tuning = job["result"]["tuning"]
        assert tuning["pairs"] == pairs and tuning["split"]["choose"] + tuning["split"]["report"] > 20
        assert {"beta", "gamma", "dim"} == set(tuning["choice"]) and tuning["table"][0]["raw"] is True
        grid = {(r["beta"], r["gamma"]) for r in tuning["table"] if not r["raw"]}
        assert len(grid) == 25  # every (β, γ) in {0, .25, .5, .75, 1}², each at every usable dim
        assert "smallest dim within 0.3" in tuning["reason"]
        chosen = tuning["choice"]
        version = job["result"]["version"]
        listed = (await client.get("/admin/versions", headers=ADMIN)).json()["versions"][0]
        assert listed["version"] == version
        assert listed["whitening"]["beta"] == chosen["beta"] and listed["whitening"]["gamma"] == chosen["gamma"]
        assert listed["whitening"]["tuned"]["pairs"] == pairs
        hint = listed["whitening"]["suggestion"]  # the unlabelled hint, shown beside every version
        assert {"beta", "gamma", "anisotropy", "why"} == set(hint) and -1 <= hint["anisotropy"] <= 1
        served_dim = (await client.post("/embed", json={"texts": ["x"]})).json()["dim"]
        assert served_dim == (chosen["dim"] if tuning["whiten"] else 32)
        png = await client.get(tuning["plot"], headers=ADMIN)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert (await client.get(tuning["plot"])).status_code == 401  # admin only
        manifest = app.state.runtime.default.versions.manifest(version)
        assert manifest["whitening"]["tuned"]["choice"] == chosen and "table" not in manifest["whitening"]["tuned"]

        # re-whitening the served corpus from its stored vectors can be tuned too (no re-encoding)
        again = await rebuild(client, {"reencode": False, "whitening": {"auto": {"pairs": pairs, "tolerance": 0}}})
        assert again["state"] == "succeeded" and again["result"]["reencoded"] is False
        best = max(again["result"]["tuning"]["table"], key=lambda r: r["choose"])
        assert again["result"]["tuning"]["choice"] == {k: best[k] for k in ("beta", "gamma", "dim")}

        # max_dim is a ceiling for every candidate, raw vectors (all dims) included
        capped = await rebuild(client, {"reencode": False, "whitening": {"auto": {"pairs": pairs, "max_dim": 4}}})
        assert capped["state"] == "succeeded", capped
        assert all(r["dim"] <= 4 and not r["raw"] for r in capped["result"]["tuning"]["table"])
        assert (await client.post("/embed", json={"texts": ["x"]})).json()["dim"] <= 4


@pytest.mark.parametrize("whitening, fragment", [
    ({"auto": {}}, "auto needs `pairs`"),
    ({"auto": {"pairs": "pairs.tsv"}, "beta": 1}, "either `auto` or beta/gamma/dim"),
    ({"auto": {"pairs": "missing.tsv"}}, "missing.tsv"),
    ({"auto": {"pairs": "../x.tsv"}}, "import"),
    ({"auto": {"pairs": "pairs.tsv", "tolerance": -1}}, "tolerance"),
    ({"auto": {"pairs": "five.tsv"}}, "at least 20 labelled pairs"),
    ({"auto": {"pairs": "same.tsv"}}, "every pair has the score 3"),
])
async def test_auto_whitening_errors_are_clear(settings, whitening, fragment):
    async with serving(settings) as (app, client):
        write_pairs(settings.import_dir)
        (settings.import_dir / "five.tsv").write_text("".join(f"a{i}\tb{i}\t{i}\n" for i in range(5)))
        (settings.import_dir / "same.tsv").write_text("".join(f"a{i}\tb{i}\t3\n" for i in range(30)))
        r = await client.post("/admin/index/rebuild", json={"documents": demo_documents(), "whitening": whitening},
                              headers=ADMIN)
        assert r.status_code in (404, 422), r.text
        assert fragment in r.json()["error"]["message"]


async def test_a_collection_can_tune_its_rebuilds_by_default(settings):
    async with serving(settings) as (app, client):
        pairs = write_pairs(settings.import_dir)
        r = await client.put("/admin/collections/tuned", json={"whitening": {"auto": {"pairs": pairs}}}, headers=ADMIN)
        assert r.status_code == 201 and r.json()["whitening"]["auto"]["pairs"] == pairs
        r = await client.put("/admin/collections/bad", json={"whitening": {"auto": {"pairs": "nope.tsv"}}},
                             headers=ADMIN)
        assert r.status_code == 404 and "nope.tsv" in r.json()["error"]["message"]
        r = await client.post("/admin/collections/tuned/rebuild", json={"documents": demo_documents(3)},
                              headers=ADMIN)
        job = await wait_job(client, r.json()["job_id"])
        assert job["state"] == "succeeded" and job["result"]["tuning"]["pairs"] == pairs
