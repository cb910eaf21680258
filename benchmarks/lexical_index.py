"""Which BM25 index, and what hybrid search costs: build time, query p50/p99, memory and the cost of adding
documents, for whitevec's own index and the libraries at hand, then dense vs hybrid search through the
served retriever.

    pip install -e '.[bench]'
    python benchmarks/lexical_index.py [--docs 100000] [--queries 300]
    python benchmarks/lexical_index.py --docs 1000000 --skip tantivy    # the 1M row

Documents are 1 to 3 sentences drawn (seeded) from the English and Chinese STS-B files, queries are other
sentences of them. Every library indexes the same pre-analyzed tokens (whitevec's analyzer: jieba words for
Chinese), so the table compares indexes, not tokenizers; the analysis itself is its own row.

- whitevec: postings (CSR by term, numpy) plus added documents kept apart (what the server runs);
- bm25s: the same formula over a scipy sparse matrix; no incremental add (a change rebuilds);
- SQLite FTS5: tokens joined by spaces, `bm25()` ranking (its own idf variant);
- tantivy: a whitespace-tokenized text field, an OR of term queries;
- milvus: the Milvus backend's own lexical side (Milvus Lite's BM25 function over whitevec's words, through
  `MilvusRetriever`; 8-dim vectors beside, so the dense part costs little).

"add 1k" is the time to make 1,000 new documents searchable (one commit for FTS5 and tantivy).
Then, through `FaissRetriever` (flat index, 384-dim synthetic vectors, documents in SQLite): dense top 10
against hybrid (each side's top 100, RRF), per single query; both include fetching the hits' documents.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _util import SHARED, cpu_flags_line, pct, read_tsv
from whitevec.index import analyzer
from whitevec.index.changes import ChangeLog
from whitevec.index.faiss_index import VectorIndex
from whitevec.index.hybrid import Fusion, search
from whitevec.index.lexical import BM25, LexicalIndex, Live, Postings
from whitevec.index.retriever import FaissRetriever
from whitevec.index.spec import IndexSpec, SearchParams
from whitevec.index.store import Document, DocumentStore


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def corpus(n: int, queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    sentences = list(dict.fromkeys(s for f in ("sts-b-en/train.tsv", "sts-b-en/dev.tsv", "sts-b-zh/train.tsv",
                                               "sts-b-zh/valid.tsv") for row in read_tsv(SHARED / f) for s in row[:2]))
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(sentences) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    return docs, [rng.choice(sentences) for _ in range(queries)]


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_whitevec(docs, tokens, queries, extra) -> dict:
    before = rss_mb()
    t0 = time.perf_counter()
    index = LexicalIndex(Postings.build(docs), BM25())
    build = time.perf_counter() - t0
    memory = rss_mb() - before
    live = Live(np.zeros(len(docs), bool), np.zeros(0, np.int64))
    q = [analyzer.analyze(x) for x in queries]
    lat = [timed(lambda t=t: index.search(t, 10, live), 1)[0] for t in q]
    t0 = time.perf_counter()
    keys = np.arange(len(docs), len(docs) + len(extra))
    index.added.add(keys, extra)
    add = time.perf_counter() - t0
    return {"build": build, "lat": lat, "memory": memory, "add": add}


def bench_bm25s(docs, tokens, queries, extra) -> dict:
    import bm25s

    before = rss_mb()
    t0 = time.perf_counter()
    retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    retriever.index(tokens, show_progress=False)
    build = time.perf_counter() - t0
    memory = rss_mb() - before
    vocab = retriever.vocab_dict
    q = [[t for t in analyzer.analyze(x) if t in vocab] for x in queries]

    def one(t):
        scores = retriever.get_scores(t) if t else np.zeros(len(docs))
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]
    lat = [timed(lambda t=t: one(t), 1)[0] for t in q]
    t0 = time.perf_counter()
    bm25s.BM25(k1=1.2, b=0.75, method="lucene").index(tokens + [analyzer.analyze(x) for x in extra],
                                                         show_progress=False)
    return {"build": build, "lat": lat, "memory": memory, "add": time.perf_counter() - t0, "add_note": "rebuild"}


def bench_fts5(docs, tokens, queries, extra, folder: Path) -> dict:
    path = folder / "fts.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body, tokenize='unicode61 remove_diacritics 0')")
    t0 = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)", ((i, " ".join(t)) for i, t in enumerate(tokens)))
    build = time.perf_counter() - t0
    memory = path.stat().st_size / 2**20

    def one(x):
        words = [w.replace('"', '""') for w in dict.fromkeys(analyzer.analyze(x))]
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        return conn.execute("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT 10", (match,)).fetchall()
    lat = [timed(lambda x=x: one(x), 1)[0] for x in queries]
    t0 = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)",
                         ((len(docs) + i, " ".join(analyzer.analyze(x))) for i, x in enumerate(extra)))
    add = time.perf_counter() - t0
    conn.close()
    return {"build": build, "lat": lat, "memory": memory, "add": add, "memory_note": "on disk"}


def bench_tantivy(docs, tokens, queries, extra, folder: Path) -> dict:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("body", stored=False, tokenizer_name="whitespace")
    builder.add_integer_field("key", stored=True, fast=True)
    schema = builder.build()
    (folder / "tantivy").mkdir()
    before = rss_mb()
    t0 = time.perf_counter()
    index = tantivy.Index(schema, path=str(folder / "tantivy"))
    writer = index.writer(heap_size=128_000_000, num_threads=1)
    for i, t in enumerate(tokens):
        writer.add_document(tantivy.Document(body=" ".join(t), key=i))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    build = time.perf_counter() - t0
    memory = rss_mb() - before
    searcher = index.searcher()

    def one(x):
        words = list(dict.fromkeys(analyzer.analyze(x)))
        if not words:
            return []
        query = tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(schema, "body", w))
                                             for w in words])
        return searcher.search(query, 10).hits
    lat = [timed(lambda x=x: one(x), 1)[0] for x in queries]
    t0 = time.perf_counter()
    writer = index.writer(heap_size=64_000_000, num_threads=1)
    for i, x in enumerate(extra):
        writer.add_document(tantivy.Document(body=" ".join(analyzer.analyze(x)), key=len(docs) + i))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    return {"build": build, "lat": lat, "memory": memory, "add": time.perf_counter() - t0}


def hybrid_cost(docs: list[str], queries: list[str], folder: Path, dim: int = 384) -> dict:
    """Dense (k 10) against hybrid (each side's top 100, RRF) through the served retriever, single queries."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(docs), dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    DocumentStore.write(folder / "docs.sqlite", [Document(str(i), t, {}) for i, t in enumerate(docs)])
    index = VectorIndex.build(vectors, IndexSpec(type="flat"), use_gpu=False)
    retriever = FaissRetriever(index, DocumentStore(folder / "docs.sqlite"), ChangeLog(folder / "changes.sqlite",
                               len(docs), dim), lambda x: x, None, LexicalIndex(Postings.build(docs), BM25()))
    q = rng.normal(size=(len(queries), dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    async def run(mode: str) -> list[float]:
        out = []
        for text, vec in zip(queries, q):
            t0 = time.perf_counter()
            await search(retriever, mode, [text], vec[None], 10, SearchParams(), None, Fusion(), False)
            out.append(time.perf_counter() - t0)
        return out

    res = {mode: asyncio.run(run(mode)) for mode in ("dense", "lexical", "hybrid", "dense")}  # dense twice: warm
    retriever.close()
    return res


def bench_milvus(docs, tokens, queries, extra, folder: Path) -> dict:
    from pymilvus import MilvusClient

    from whitevec.index.milvus import MilvusRetriever
    from whitevec.models.pipeline import l2_normalize

    client = MilvusClient(str(folder / "milvus.db"))
    rng = np.random.default_rng(0)
    before = rss_mb()
    t0 = time.perf_counter()
    retriever = MilvusRetriever.create(client, "lexical_bench", [Document(str(i), d, {}) for i, d in enumerate(docs)],
                                       rng.normal(size=(len(docs), 8)).astype(np.float32), IndexSpec("flat"),
                                       l2_normalize, BM25())
    asyncio.run(retriever.search_lexical([analyzer.analyze(queries[0])], 10))  # Milvus Lite indexes at first search
    build = time.perf_counter() - t0
    memory = rss_mb() - before
    lat = [timed(lambda x=x: asyncio.run(retriever.search_lexical([analyzer.analyze(x)], 10)), 1)[0] for x in queries]
    t0 = time.perf_counter()
    retriever.change([Document(f"x{i}", x, {}) for i, x in enumerate(extra)],
                     rng.normal(size=(len(extra), 8)).astype(np.float32), [])
    asyncio.run(retriever.search_lexical([analyzer.analyze(queries[0])], 10))
    add = time.perf_counter() - t0
    retriever.close()
    client.close()
    return {"build": build, "lat": lat, "memory": memory, "add": add}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=("bm25s", "fts5", "tantivy", "milvus", "hybrid"))
    args = parser.parse_args()
    docs, queries = corpus(args.docs, args.queries)
    extra, _ = corpus(1000, 0, seed=1)
    analyzer.analyze("预热")  # jieba's dictionary, loaded once, outside every timing
    t0 = time.perf_counter()
    tokens = [analyzer.analyze(d) for d in docs]
    analyze = time.perf_counter() - t0
    print(f"# lexical indexes: {args.docs:,} documents ({sum(map(len, tokens)) / len(tokens):.1f} tokens each), "
          f"{args.queries} single queries, top 10; CPU flags: {cpu_flags_line()}")
    print(f"analysis alone (whitevec's analyzer, every library's input): {analyze:.1f} s\n")
    print(f"{'index':<10} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'memory MB':>10} {'add 1k s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = {"whitevec": lambda: bench_whitevec(docs, tokens, queries, extra)}
        if "bm25s" not in args.skip:
            rows["bm25s"] = lambda: bench_bm25s(docs, tokens, queries, extra)
        if "fts5" not in args.skip:
            rows["fts5"] = lambda: bench_fts5(docs, tokens, queries, extra, Path(tmp))
        if "tantivy" not in args.skip:
            rows["tantivy"] = lambda: bench_tantivy(docs, tokens, queries, extra, Path(tmp))
        if "milvus" not in args.skip:
            rows["milvus"] = lambda: bench_milvus(docs, tokens, queries, extra, Path(tmp))
        for name, run in rows.items():
            gc.collect()
            r = run()
            p50, p99 = pct(r["lat"])
            build = r["build"] - (analyze if name in ("whitevec", "milvus") else 0)  # these analyze themselves
            print(f"{name:<10} {build:>8.1f} {p50:>8.2f} {p99:>8.2f} {r['memory']:>10.0f}"
                  f"{' (disk)' if r.get('memory_note') else '       '}{r['add']:>9.2f}"
                  f"{' (' + r['add_note'] + ')' if r.get('add_note') else ''}")
        if "hybrid" not in args.skip:
            cost = hybrid_cost(docs, queries, Path(tmp))
            print(f"\n# served retriever, {args.docs:,} documents, flat 384-dim, single queries (ms)")
            print(f"{'mode':<8} {'p50':>7} {'p99':>7}")
            for mode in ("dense", "lexical", "hybrid"):
                p50, p99 = pct(cost[mode])
                print(f"{mode:<8} {p50:>7.2f} {p99:>7.2f}")
            ratio = statistics.median(cost["hybrid"]) / statistics.median(cost["dense"])
            print(f"hybrid p50 / dense p50 = {ratio:.2f}")


if __name__ == "__main__":
    main()
