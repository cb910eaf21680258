"""Long documents through the service: one vector per document against a collection with passages, dense,
lexical and hybrid; and what passages cost to build and keep.

    python benchmarks/long_documents.py [--docs 300] [--queries 300] [--max-tokens 128] [--overlap 16]
                                        [--engine auto] [--tiny]

Documents are built from the shared STS-B files: consecutive first sentences joined until a document holds
about 1,000 characters (English ~220 tokens, Chinese ~1,000: past the bundled model's 256, so one vector per
Chinese document never sees most of it). A query is the second sentence of a paraphrase pair (scored 4 or
more) whose first sentence is inside a document; the answer is that document.

A real `whitevec serve` on loopback (the bundled model) holds two collections per language: `whole` (no
passages: one vector per document, truncated at the model's max length) and `passages` (`{"max_tokens",
"overlap"}`: passage rows, hits grouped per document by their best passage). Both are rebuilt with the same
documents and the collection defaults (whitening β = γ = 0: cosine of the pooled vectors), then searched over
HTTP with k = 10 in each mode. Prints hit@1, hit@10 and MRR@10 per language, collection and mode, then the
build: seconds, rows, and the version's files on disk (index, raw vectors, documents, lexical index), each
also per 10,000 documents. `--cost-docs N` adds the same build figures for N English documents of ~1,000
characters drawn from STS-B sentences (as many as wanted; the quality set has only a few hundred). What a
served version holds in memory is its index and lexical index (raw vectors and documents stay on disk).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx
import numpy as np

from _util import SHARED, cpu_flags_line, long_texts, read_tsv, start_server, wait_job

FILES = {"en": ("sts-b-en/train.tsv", "sts-b-en/dev.tsv"), "zh": ("sts-b-zh/train.tsv", "sts-b-zh/valid.tsv")}
TOKEN = "bench"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODES = ("dense", "lexical", "hybrid")
BATCH = 64  # queries per /search request


def documents(lang: str, n_docs: int, n_queries: int, chars: int = 1000) -> tuple[list[str], list[str], list[int]]:
    """(documents, queries, the document answering each query)."""
    rows = [r for f in FILES[lang] for r in read_tsv(SHARED / f)]
    docs, where, current = [], {}, []
    joiner = " " if lang == "en" else ""
    for s1, _, _ in rows:
        if s1 in where:
            continue
        where[s1] = len(docs)
        current.append(s1)
        if sum(map(len, current)) >= chars:
            docs.append(joiner.join(current))
            current = []
            if len(docs) == n_docs:
                break
    queries, answers = [], []
    for s1, s2, score in rows:
        if score >= 4 and where.get(s1, n_docs) < len(docs) and s2 not in queries:
            queries.append(s2)
            answers.append(where[s1])
            if len(queries) == n_queries:
                break
    return docs, queries, answers


def metrics(ranked_ids: list[list[str]], answers: list[str]) -> tuple[float, float, float]:
    ranks = [row.index(a) + 1 if a in row else None for row, a in zip(ranked_ids, answers)]
    hit1 = np.mean([r == 1 for r in ranks])
    hit10 = np.mean([r is not None for r in ranks])
    mrr = np.mean([1 / r if r else 0.0 for r in ranks])
    return 100 * hit1, 100 * hit10, 100 * mrr


def search(client: httpx.Client, name: str, queries: list[str], mode: str) -> list[list[str]]:
    out = []
    for start in range(0, len(queries), BATCH):
        r = client.post(f"/collections/{name}/search", json={"queries": queries[start:start + BATCH], "k": 10,
                                                              "mode": mode}, headers=AUTH)
        r.raise_for_status()
        out += [[h["id"] for h in res["hits"]] for res in r.json()["results"]]
    return out


def on_disk(folder: Path) -> dict[str, int]:
    """Bytes of a version's files, by part."""
    parts = {"index": ["index.faiss"], "raw": ["raw.npy"], "documents": ["docs.sqlite"], "lexical": ["lexical.npz"]}
    return {k: sum((folder / f).stat().st_size for f in files if (folder / f).is_file()) for k, files in parts.items()}


def build(client: httpx.Client, data: Path, name: str, docs: list[dict], passages: dict | None) -> dict:
    r = client.put(f"/admin/collections/{name}", json={"passages": passages}, headers=AUTH)
    r.raise_for_status()
    r = client.post(f"/admin/collections/{name}/rebuild", json={"documents": docs}, headers=AUTH)
    r.raise_for_status()
    job = wait_job(client, r.json()["job_id"], AUTH)
    if job["state"] != "succeeded":
        raise RuntimeError(f"rebuild of {name} {job['state']}: {job.get('error')}")
    result = job["result"]
    version = data / "collections" / name / "versions" / result["version"]
    rows = (result.get("passages") or {}).get("rows", result["documents"])
    return {"seconds": result["seconds"], "rows": rows, **on_disk(version)}


def run(lang: str, client: httpx.Client, data: Path, args) -> None:
    texts, queries, answers = documents(lang, args.docs, args.queries)
    docs = [{"id": f"{lang}-{i}", "text": t} for i, t in enumerate(texts)]
    answer_ids = [f"{lang}-{a}" for a in answers]
    setting = {"max_tokens": args.max_tokens, "overlap": args.overlap}
    built = {"whole": build(client, data, f"{lang}-whole", docs, None),
             "passages": build(client, data, f"{lang}-passages", docs, setting)}
    print(f"\n## {lang}: {len(docs)} documents ({np.mean([len(t) for t in texts]):.0f} characters), "
          f"{built['passages']['rows']} passages ({built['passages']['rows'] / len(docs):.1f} per document), "
          f"{len(queries)} queries")
    print(f"{'collection':<10} {'search':<8} {'hit@1':>6} {'hit@10':>7} {'MRR@10':>7}")
    for mode in MODES:
        for kind in ("whole", "passages"):
            h1, h10, mrr = metrics(search(client, f"{lang}-{kind}", queries, mode), answer_ids)
            print(f"{kind:<10} {mode:<8} {h1:>6.1f} {h10:>7.1f} {mrr:>7.1f}")
    print_costs(built, len(docs))


def costs(client: httpx.Client, data: Path, n: int, setting: dict) -> None:
    docs = [{"id": f"c-{i}", "text": t} for i, t in enumerate(long_texts(n))]
    built = {"whole": build(client, data, "cost-whole", docs, None),
             "passages": build(client, data, "cost-passages", docs, setting)}
    print(f"\n## building {n} English documents of ~1,000 characters")
    print_costs(built, n)


def print_costs(built: dict[str, dict], n: int) -> None:
    """Build seconds and files per collection, then per 10,000 documents: seconds, memory (index + lexical
    index, what a served version holds) and disk (every file)."""
    per = 10_000 / n
    print(f"\n{'collection':<10} {'rows':>7} {'build s':>8} {'index MB':>9} {'raw MB':>7} {'docs MB':>8} "
          f"{'lexical MB':>10} | per 10k docs: {'build s':>8} {'memory MB':>10} {'disk MB':>8}")
    for kind, b in built.items():
        mb = {k: b[k] / 1e6 for k in ("index", "raw", "documents", "lexical")}
        print(f"{kind:<10} {b['rows']:>7} {b['seconds']:>8.1f} {mb['index']:>9.2f} {mb['raw']:>7.2f} "
              f"{mb['documents']:>8.2f} {mb['lexical']:>10.2f} | {'':>13} {b['seconds'] * per:>8.1f} "
              f"{(mb['index'] + mb['lexical']) * per:>10.1f} {sum(mb.values()) * per:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--engine", default="auto", help="WHITEVEC_ENGINE of the server")
    parser.add_argument("--cost-docs", type=int, default=0, help="also build this many drawn documents (cost)")
    parser.add_argument("--tiny", action="store_true", help="20 documents, 10 queries per language (a smoke run)")
    args = parser.parse_args()
    if args.tiny:
        args.docs, args.queries, args.cost_docs = 20, 10, 20
    with tempfile.TemporaryDirectory(prefix="whitevec-long-") as tmp:
        data = Path(tmp) / "data"
        base, proc = start_server(data, TOKEN, env={"WHITEVEC_ENGINE": args.engine})
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                engine = client.get("/readyz", headers=AUTH).json()["engine"]
                print(f"# long documents through the service: the bundled model, passages of {args.max_tokens} "
                      f"tokens overlapping by {args.overlap}; engine {engine}; CPU flags: {cpu_flags_line()}")
                for lang in FILES:
                    run(lang, client, data, args)
                if args.cost_docs:
                    costs(client, data, args.cost_docs, {"max_tokens": args.max_tokens, "overlap": args.overlap})
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
