"""Paraphrase hit@1 of an English and a Chinese corpus: in collections of one server (each whitened on its
own corpus), on single-corpus servers, and in one collection whitened on their union.

    python benchmarks/collections_quality.py [--beta 1 --gamma 1] [--dim 384] [--tiny]

Corpora: every sentence of STS-B en (train + dev) and of Chinese STS-B (train + valid), from
../shared/data. Queries: the sentences of dev/valid pairs scored >= 4 (both directions); a hit is a query
whose nearest other sentence (search k=2, itself excluded) is one of its paraphrases. All servers run the
bundled model through HTTP, so every figure is what a client of that layout would get.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from _util import SHARED, read_tsv, start_server, wait_job

TOKEN = "bench"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
FILES = {"en": ("sts-b-en/train.tsv", "sts-b-en/dev.tsv"), "zh": ("sts-b-zh/train.tsv", "sts-b-zh/valid.tsv")}


def corpus_and_queries(lang: str, tiny: bool = False) -> tuple[list[str], dict[str, set[str]]]:
    train, held_out = (read_tsv(SHARED / f) for f in FILES[lang])
    if tiny:  # a smoke run: 150 held-out pairs make the whole corpus
        train, held_out = [], held_out[:150]
    sentences = list(dict.fromkeys(s for a, b, _ in train + held_out for s in (a, b) if s))
    partners: dict[str, set[str]] = {}
    for a, b, score in held_out:
        if score >= 4 and a != b:
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
    return sentences, partners


def documents(lang: str, sentences: list[str]) -> list[dict]:
    return [{"id": f"{lang}:{i}", "text": s} for i, s in enumerate(sentences)]


def build(http: httpx.Client, path: str, docs: list[dict], whitening: dict) -> None:
    r = http.post(path, json={"documents": docs, "whitening": whitening, "confirm_shrink": True}, headers=ADMIN)
    r.raise_for_status()
    job = wait_job(http, r.json()["job_id"], ADMIN)
    assert job["state"] == "succeeded", job


def hit_at_1(http: httpx.Client, search: str, lang: str, sentences: list[str], partners: dict[str, set[str]]) -> float:
    text_of = {f"{lang}:{i}": s for i, s in enumerate(sentences)}
    queries, hits, crossed = list(partners), 0, 0
    for start in range(0, len(queries), 256):
        chunk = queries[start:start + 256]
        r = http.post(search, json={"queries": chunk, "k": 2}, timeout=600)
        r.raise_for_status()
        for query, result in zip(chunk, r.json()["results"]):
            others = [h for h in result["hits"] if h["text"] != query]
            if not others:
                continue
            crossed += not others[0]["id"].startswith(lang + ":")
            hits += text_of.get(others[0]["id"]) in partners[query]
    if crossed:
        print(f"  ({crossed} {lang} queries found a sentence of the other language first)")
    return 100.0 * hits / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 150 held-out pairs per language")
    args = parser.parse_args()
    whitening = {"beta": args.beta, "gamma": args.gamma, **({"dim": args.dim} if args.dim else {})}
    data = {lang: corpus_and_queries(lang, args.tiny) for lang in FILES}
    for lang, (sentences, partners) in data.items():
        print(f"{lang}: {len(sentences)} sentences, {len(partners)} paraphrase queries")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lang, (sentences, partners) in data.items():  # one server per corpus
            base, proc = start_server(Path(tmp) / f"single-{lang}", TOKEN)
            try:
                with httpx.Client(base_url=base, timeout=3600) as http:
                    build(http, "/admin/index/rebuild", documents(lang, sentences), whitening)
                    results.setdefault("single-corpus server", {})[lang] = hit_at_1(
                        http, "/search", lang, sentences, partners)
            finally:
                proc.terminate()
                proc.wait()
        base, proc = start_server(Path(tmp) / "collections", TOKEN)
        try:
            with httpx.Client(base_url=base, timeout=3600) as http:
                union = []
                for lang, (sentences, partners) in data.items():
                    http.put(f"/admin/collections/{lang}", json={}, headers=ADMIN).raise_for_status()
                    build(http, f"/admin/collections/{lang}/rebuild", documents(lang, sentences), whitening)
                    union += documents(lang, sentences)
                http.put("/admin/collections/union", json={}, headers=ADMIN).raise_for_status()
                build(http, "/admin/collections/union/rebuild", union, whitening)
                for lang, (sentences, partners) in data.items():
                    results.setdefault("collections, one per corpus", {})[lang] = hit_at_1(
                        http, f"/collections/{lang}/search", lang, sentences, partners)
                    results.setdefault("one collection, fit on the union", {})[lang] = hit_at_1(
                        http, "/collections/union/search", lang, sentences, partners)
        finally:
            proc.terminate()
            proc.wait()
    print(f"\nparaphrase hit@1 (%), bundled all-MiniLM-L6-v2, whitening {whitening}")
    print(f"{'layout':<36} {'en':>7} {'zh':>7}")
    for layout, row in results.items():
        print(f"{layout:<36} {row['en']:>7.2f} {row['zh']:>7.2f}")


if __name__ == "__main__":
    main()
