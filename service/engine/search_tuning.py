"""Auto search tuning inside a build: the labelled pairs encoded with the new version's model and fit, every
search mode scored on them (index/search_eval.py), the choice recorded in the version as the collection's
default search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from whitevec.index.lexical import BM25
from whitevec.index.search_eval import make_task, plot_fusion, tune
from whitevec.models.encoder import Encoder
from whitevec.models.evaluation import read_pairs
from whitevec.models.pipeline import l2_normalize
from whitevec.models.tuning import check_pairs
from whitevec.models.whitening import Whitening

from .jobs import JobContext

#: What the manifest keeps of a tuning (the job result has the whole table).
SUMMARY = ("pairs", "candidate", "choice", "reason", "held_out", "held_out_dense", "split", "corpus")


@dataclass(frozen=True)
class AutoSearch:
    """What a rebuild asks for: choose the search mode on the labelled pairs in the file `pairs` (`label`: how
    the manifest and job name it, e.g. its name in the import folder)."""

    pairs: str
    label: str
    seed: int = 0


def check_auto_search(path: Path, label: str) -> None:
    """Refuse now, naming the line, a file that is not pairs or holds too few paraphrases (not when the job runs)."""
    pairs = read_pairs(path)
    check_pairs(pairs.scores, pairs.a, pairs.b, label)
    task = make_task(pairs.a, pairs.b, pairs.scores)
    if len(task.queries) < 4:
        raise ValueError(f"{label}: {len(task.queries)} pairs are scored 4 or more (paraphrases); tuning search "
                         "needs at least 4 to choose on half and report on the other")


def search_tuner(ctx: JobContext | None, encoder: Encoder, auto: AutoSearch, bm25: BM25,
                 report: dict) -> Callable[[Whitening], dict]:
    """tune(fit) → the manifest's `search` section; the full report lands in `report` for the job."""
    pairs = read_pairs(auto.pairs)

    def on_progress(done: int, total: int) -> None:
        if ctx is not None:
            ctx.check_cancelled()
            ctx.progress(done, total, phase="tuning search")

    def tune_search(fit: Whitening) -> dict:
        task = make_task(pairs.a, pairs.b, pairs.scores)
        texts = list(dict.fromkeys(task.corpus + task.queries))
        where = {t: i for i, t in enumerate(texts)}
        vectors = l2_normalize(fit.transform(encoder.encode(texts, on_progress=on_progress).vectors))
        report.update(tune(task, vectors[[where[t] for t in task.queries]], vectors[[where[t] for t in task.corpus]],
                           bm25, auto.seed))
        report["pairs"] = auto.label
        return {**report["choice"], "tuned": {k: report[k] for k in SUMMARY}}
    return tune_search


def write_plot(report: dict, out: Path) -> None:
    """The job's picture: held-out hit@1 against alpha, the choice starred."""
    plot_fusion(report, out, f"{report['pairs']}: held-out hit@1 by search mode")

