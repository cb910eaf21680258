"""How well each search mode finds paraphrases on labelled pairs, and the mode chosen from them.

The task: the corpus is the pairs' second sentences (each text once, plus any extra corpus); each pair
scored at least 4 asks its first sentence and expects its second back. Every candidate — dense, lexical,
RRF, and weighted fusion at alpha 0.1 … 0.9 — ranks the corpus for every query; hit@1 (the expected
sentence first) and MRR@10 say how well. Like auto whitening, the choice is made on one seeded half of
the queries and reported on the other, so the figure a user reads was not used to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whitevec.models.training import PARAPHRASE_SCORE
from whitevec.models.tuning import split

from . import analyzer
from .hybrid import DEPTH, Fusion, Mode, fuse
from .lexical import BM25, LexicalIndex, Live, Postings
from .retriever import Hit
from .store import Document

ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Candidate:
    """One way to search, as a collection's `search` setting says it."""

    name: str
    mode: Mode
    fusion: Fusion | None = None

    def setting(self) -> dict:
        return {"mode": self.mode, **({"fusion": self.fusion.to_dict()} if self.fusion is not None else {})}


CANDIDATES = [Candidate("dense", "dense"), Candidate("lexical", "lexical"), Candidate("rrf", "hybrid", Fusion("rrf")),
              *(Candidate(f"weighted {a}", "hybrid", Fusion("weighted", alpha=a)) for a in ALPHAS)]


@dataclass(frozen=True)
class SearchTask:
    """Queries and, for each, the corpus position of the sentence it should find."""

    queries: list[str]
    targets: list[int]
    corpus: list[str]


def make_task(a: list[str], b: list[str], scores: np.ndarray, extra_corpus: list[str] = ()) -> SearchTask:
    where: dict[str, int] = {}
    for text in [*b, *extra_corpus]:
        where.setdefault(text, len(where))
    paraphrases = [(q, where[t]) for q, t, s in zip(a, b, scores) if s >= PARAPHRASE_SCORE and q != t]
    return SearchTask([q for q, _ in paraphrases], [t for _, t in paraphrases], list(where))


def rankings(task: SearchTask, query_vectors: np.ndarray, corpus_vectors: np.ndarray,
             bm25: BM25 = BM25()) -> dict[str, list[list[int]]]:
    """Each candidate's top 10 corpus positions for every query (vectors: served, unit length)."""
    docs = [Document(str(i), t, {}) for i, t in enumerate(task.corpus)]
    sims = np.asarray(query_vectors, np.float32) @ np.asarray(corpus_vectors, np.float32).T
    depth = min(DEPTH, len(docs))
    lexical_index = LexicalIndex(Postings.build(task.corpus), bm25)
    live = Live(np.zeros(len(docs), bool), np.zeros(0, np.int64))
    out: dict[str, list[list[int]]] = {c.name: [] for c in CANDIDATES}
    for row, query in zip(sims, task.queries):
        top = np.argpartition(-row, depth - 1)[:depth] if depth < len(row) else np.arange(len(row))
        top = top[np.lexsort((top, -row[top]))]
        dense = [Hit(float(row[i]), docs[i]) for i in top]
        terms = analyzer.analyze(query)
        scores, ids = lexical_index.search(terms, depth, live)
        lexical = [Hit(float(s), docs[int(i)]) for s, i in zip(scores, ids)]
        for c in CANDIDATES:
            ranked = fuse(dense, lexical, terms, 10, c.mode, c.fusion or Fusion(), False)
            out[c.name].append([int(h.document.id) for h in ranked])
    return out


def scores(ranked: list[list[int]], targets: list[int], rows: np.ndarray) -> dict[str, float]:
    """hit@1 and MRR@10 (×100) over the queries in `rows`."""
    if not len(rows):
        return {"hit_at_1": 0.0, "mrr_at_10": 0.0}
    hit = [ranked[r][:1] == [targets[r]] for r in rows]
    rr = [1.0 / (ranked[r].index(targets[r]) + 1) if targets[r] in ranked[r][:10] else 0.0 for r in rows]
    return {"hit_at_1": round(100 * float(np.mean(hit)), 2), "mrr_at_10": round(100 * float(np.mean(rr)), 2)}


def tune(task: SearchTask, query_vectors: np.ndarray, corpus_vectors: np.ndarray, bm25: BM25 = BM25(),
         seed: int = 0) -> dict:
    """Every candidate on both halves; the best hit@1 on the choosing half (MRR@10, then the simpler
    candidate, breaks ties) is the choice, reported with the other half's figures and why."""
    if len(task.queries) < 4:
        raise ValueError(f"{len(task.queries)} paraphrase pairs (scored >= {PARAPHRASE_SCORE:g}): tuning search needs "
                         "at least 4, two for each half")
    ranked = rankings(task, query_vectors, corpus_vectors, bm25)
    choose, report = split(len(task.queries), seed)
    table = [{"candidate": c.name, **c.setting(), "choose": scores(ranked[c.name], task.targets, choose),
              "report": scores(ranked[c.name], task.targets, report)} for c in CANDIDATES]
    best = max(range(len(table)), key=lambda i: (table[i]["choose"]["hit_at_1"], table[i]["choose"]["mrr_at_10"], -i))
    chosen = table[best]
    by_name = {row["candidate"]: row for row in table}
    reason = (f"{chosen['candidate']} put the expected sentence first for {chosen['choose']['hit_at_1']:.1f}% of the "
              f"{len(choose)} choosing queries (dense {by_name['dense']['choose']['hit_at_1']:.1f}%, lexical "
              f"{by_name['lexical']['choose']['hit_at_1']:.1f}%); on the {len(report)} held-out queries it scores "
              f"{chosen['report']['hit_at_1']:.1f}% (dense {by_name['dense']['report']['hit_at_1']:.1f}%)")
    return {"table": table, "choice": CANDIDATES[best].setting(), "candidate": chosen["candidate"], "reason": reason,
            "held_out": chosen["report"], "held_out_dense": by_name["dense"]["report"],
            "split": {"choose": len(choose), "report": len(report), "seed": seed},
            "corpus": len(task.corpus), "bm25": bm25.to_dict()}


def format_table(report: dict) -> str:
    """The table `whitevec eval search` prints: every candidate on both halves, the choice starred."""
    lines = [f"{'candidate':<14} {'choose hit@1':>12} {'MRR@10':>7}   {'held-out hit@1':>14} {'MRR@10':>7}"]
    for row in report["table"]:
        mark = " *" if row["candidate"] == report["candidate"] else ""
        lines.append(f"{row['candidate']:<14} {row['choose']['hit_at_1']:>12.2f} {row['choose']['mrr_at_10']:>7.2f}   "
                     f"{row['report']['hit_at_1']:>14.2f} {row['report']['mrr_at_10']:>7.2f}{mark}")
    split_ = report["split"]
    lines.append(f"\n{split_['choose']} choosing / {split_['report']} held-out queries over {report['corpus']} corpus "
                 f"sentences (seed {split_['seed']}); chosen: {report['choice']}")
    lines.append(report["reason"])
    return "\n".join(lines)


def plot_fusion(report: dict, out: Path, title: str) -> Path:
    """Held-out hit@1 against the weighted fusion's alpha, with dense, lexical and RRF as reference lines
    and the choice starred: where people would rather look than read the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {row["candidate"]: row["report"]["hit_at_1"] for row in report["table"]}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ALPHAS, [by_name[f"weighted {a}"] for a in ALPHAS], marker="o", label="weighted (alpha = dense weight)")
    for name, style in (("dense", ":"), ("lexical", "--"), ("rrf", "-.")):
        ax.axhline(by_name[name], linestyle=style, color="gray", label=f"{name} ({by_name[name]:.1f})")
    chosen = report["candidate"]
    fusion = report["choice"].get("fusion", {})
    x = fusion.get("alpha", 1.0 if chosen == "dense" else 0.0 if chosen == "lexical" else 0.5)
    ax.plot([x], [by_name[chosen]], marker="*", markersize=16, color="red", linestyle="none", zorder=5,
            label=f"chosen: {chosen}")
    ax.set_xlabel("alpha (0: lexical only, 1: dense only)")
    ax.set_ylabel("held-out hit@1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
