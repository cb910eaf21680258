"""Long documents: one vector per document against passages, dense, lexical and hybrid.

    python benchmarks/long_documents.py [--docs 300] [--queries 300] [--max-tokens 128] [--overlap 16] [--tiny]

Documents are built from the shared STS-B files: consecutive first sentences joined until a document holds
about 1,000 characters (English ~220 tokens, Chinese ~1,000: past the bundled model's 256, so one vector per
Chinese document never sees most of it). A query is the second sentence of a paraphrase pair (scored 4 or
more) whose first sentence is inside a document; the answer is that document.

- document: one vector per document (the model truncates at its max length), BM25 over whole documents;
- passages: each document split by whitevec's splitter (models/passages.py), a vector and a BM25 entry per
  passage; a document scores as its best passage (dense, lexical), hybrid fuses passages (RRF, k 60, each
  side's top 100) and then keeps each document's best.

Vectors are the bundled model's pooled vectors, compared by cosine (whitening is a separate choice). Prints
hit@1, hit@10 and MRR@10 per language and method, and the passages per document.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _util import SHARED, cpu_flags_line, read_tsv
from whitevec.index import analyzer
from whitevec.index.lexical import BM25, LexicalIndex, Live, Postings
from whitevec.models.encoder import Encoder
from whitevec.models.passages import PassageSetting, split

FILES = {"en": ("sts-b-en/train.tsv", "sts-b-en/dev.tsv"), "zh": ("sts-b-zh/train.tsv", "sts-b-zh/valid.tsv")}
DEPTH, RRF_K = 100, 60


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


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ranked(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]


def lexical(texts: list[str], queries: list[str]) -> np.ndarray:
    """BM25 scores, queries × texts (0 where no query word)."""
    index = LexicalIndex(Postings.build(texts), BM25())
    live = Live(np.zeros(len(texts), bool), np.zeros(0, np.int64))
    out = np.zeros((len(queries), len(texts)), np.float32)
    for i, q in enumerate(queries):
        scores, ids = index.search(analyzer.analyze(q), len(texts), live)
        out[i, ids] = scores
    return out


def rrf(dense: np.ndarray, lex: np.ndarray) -> np.ndarray:
    """Reciprocal rank fusion of each side's top DEPTH."""
    fused = np.zeros_like(dense)
    for scores in (dense, lex):
        top = ranked(scores)
        for q, row in enumerate(top):
            keep = row[scores[q, row] > (0 if scores is lex else -np.inf)]
            fused[q, keep] += 1.0 / (RRF_K + np.arange(1, len(keep) + 1))
    return fused


def best_per_document(scores: np.ndarray, owner: np.ndarray, n_docs: int) -> np.ndarray:
    """queries × documents: each document's best passage score."""
    out = np.full((scores.shape[0], n_docs), -np.inf, np.float32)
    for q in range(scores.shape[0]):
        np.maximum.at(out[q], owner, scores[q])
    return out


def metrics(scores: np.ndarray, answers: list[int]) -> tuple[float, float, float]:
    top = ranked(scores)[:, :10]
    ranks = [int(np.flatnonzero(row == a)[0]) + 1 if a in row else None for row, a in zip(top, answers)]
    hit1 = np.mean([r == 1 for r in ranks])
    hit10 = np.mean([r is not None for r in ranks])
    mrr = np.mean([1 / r if r else 0.0 for r in ranks])
    return 100 * hit1, 100 * hit10, 100 * mrr


def run(lang: str, encoder: Encoder, args) -> list[tuple]:
    docs, queries, answers = documents(lang, args.docs, args.queries)
    setting = PassageSetting(args.max_tokens, args.overlap)
    setting.check(encoder.max_length)
    spans = [split(d, encoder.tokenizer, setting) for d in docs]
    passages = [d[s.start:s.end] for d, ss in zip(docs, spans) for s in ss]
    owner = np.array([i for i, ss in enumerate(spans) for _ in ss])
    t0 = time.perf_counter()
    q_vec = unit(encoder.encode(queries).vectors)
    d_vec = unit(encoder.encode(docs).vectors)
    p_vec = unit(encoder.encode(passages).vectors)
    took = time.perf_counter() - t0
    dense_doc, dense_p = q_vec @ d_vec.T, q_vec @ p_vec.T
    lex_doc, lex_p = lexical(docs, queries), lexical(passages, queries)
    rows = [("document", "dense", *metrics(dense_doc, answers)),
            ("passages", "dense", *metrics(best_per_document(dense_p, owner, len(docs)), answers)),
            ("document", "lexical", *metrics(lex_doc, answers)),
            ("passages", "lexical", *metrics(best_per_document(lex_p, owner, len(docs)), answers)),
            ("document", "hybrid", *metrics(rrf(dense_doc, lex_doc), answers)),
            ("passages", "hybrid", *metrics(best_per_document(rrf(dense_p, lex_p), owner, len(docs)), answers))]
    print(f"\n## {lang}: {len(docs)} documents ({np.mean([len(d) for d in docs]):.0f} characters), "
          f"{len(passages)} passages ({len(passages) / len(docs):.1f} per document), {len(queries)} queries; "
          f"encoding took {took:.1f} s")
    print(f"{'vectors':<10} {'search':<8} {'hit@1':>6} {'hit@10':>7} {'MRR@10':>7}")
    for unit_, mode, h1, h10, mrr in rows:
        print(f"{unit_:<10} {mode:<8} {h1:>6.1f} {h10:>7.1f} {mrr:>7.1f}")
    return [(lang, *r) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="20 documents, 10 queries per language (a smoke run)")
    args = parser.parse_args()
    if args.tiny:
        args.docs, args.queries = 20, 10
    encoder = Encoder(None, device="cpu", engine="onnx")
    print(f"# long documents: the bundled model ({encoder.max_length} tokens at most), passages of "
          f"{args.max_tokens} tokens overlapping by {args.overlap}; CPU flags: {cpu_flags_line()}")
    for lang in FILES:
        run(lang, encoder, args)


if __name__ == "__main__":
    main()
