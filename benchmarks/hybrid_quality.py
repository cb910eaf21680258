"""Paraphrase hit@1 and MRR@10 of dense, lexical and hybrid search through the HTTP service, with the
fusion auto-tuned from the same labelled pairs.

    python benchmarks/hybrid_quality.py [--tiny]

For Chinese STS-B valid and English STS-B dev (../shared/data): one collection each on one `whitevec serve`
(bundled model, default whitening β = γ = 0), its corpus the pairs' second sentences, built with
`"search": {"auto": {"pairs": FILE}}`. The tuning job chooses on one seeded half of the paraphrase queries
(first sentences of pairs scored >= 4); this script then asks the *other* half over HTTP in every mode — and
with no mode, which is the collection's tuned default — and counts a hit when the first result is the
pair's second sentence.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import httpx

from _util import SHARED, start_server, wait_job
from whitevec.index.search_eval import make_task
from whitevec.models.evaluation import read_pairs
from whitevec.models.tuning import split

TOKEN = "bench"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
FILES = {"zh": "sts-b-zh/valid.tsv", "en": "sts-b-en/dev.tsv"}
MODES = {"dense": {"mode": "dense"}, "lexical": {"mode": "lexical"}, "hybrid rrf": {"mode": "hybrid"},
         "hybrid weighted 0.5": {"mode": "hybrid", "fusion": {"method": "weighted", "alpha": 0.5}},
         "auto (tuned default)": {}}


def measure(client: httpx.Client, data: Path, lang: str, tiny: bool) -> tuple[dict, dict]:
    source = SHARED / FILES[lang]
    pairs = read_pairs(source)
    if tiny:
        pairs = type(pairs)(pairs.a[:200], pairs.b[:200], pairs.scores[:200])
    task = make_task(pairs.a, pairs.b, pairs.scores)
    name = f"pairs-{lang}.tsv"
    (data / "import" / name).write_text(
        "".join(f"{a}\t{b}\t{s}\n" for a, b, s in zip(pairs.a, pairs.b, pairs.scores)), encoding="utf-8")
    client.put(f"/admin/collections/{lang}", headers=ADMIN, json={}).raise_for_status()
    docs = [{"id": str(i), "text": t} for i, t in enumerate(task.corpus)]
    r = client.post(f"/admin/collections/{lang}/rebuild", headers=ADMIN,
                    json={"documents": docs, "search": {"auto": {"pairs": name}}})
    r.raise_for_status()
    job = wait_job(client, r.json()["job_id"], ADMIN)
    assert job["state"] == "succeeded", job
    tuned = job["result"]["search_tuning"]
    _, held_out = split(len(task.queries), tuned["split"]["seed"])
    out = {}
    for label, body in MODES.items():
        hits, rr = 0, 0.0
        for start in range(0, len(held_out), 32):
            rows = held_out[start:start + 32]
            answer = client.post(f"/collections/{lang}/search", json={"queries": [task.queries[i] for i in rows],
                                                                      "k": 10, **body}).json()
            for i, result in zip(rows, answer["results"]):
                ranked = [int(h["id"]) for h in result["hits"]]
                hits += ranked[:1] == [task.targets[i]]
                rr += 1 / (ranked.index(task.targets[i]) + 1) if task.targets[i] in ranked else 0
        out[label] = (100 * hits / len(held_out), 100 * rr / len(held_out))
    return out, tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="200 pairs per language (a smoke run)")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="whitevec-hybrid-"))
    base, proc = start_server(data, TOKEN)
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            (data / "import").mkdir(exist_ok=True)  # the server's import folder: the pairs files go there
            for lang in FILES:
                table, tuned = measure(client, data, lang, args.tiny)
                print(f"# {FILES[lang]}: {tuned['split']['report']} held-out queries over {tuned['corpus']} "
                      f"sentences, through HTTP; tuned: {tuned['candidate']} ({tuned['choice']})")
                print(f"{'mode':<22} {'hit@1':>6} {'MRR@10':>7}")
                for label, (hit, mrr) in table.items():
                    print(f"{label:<22} {hit:>6.1f} {mrr:>7.1f}")
                gain = table["auto (tuned default)"][0] - table["dense"][0]
                print(f"tuned default over dense: {gain:+.1f} points hit@1\n{tuned['reason']}\n")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
