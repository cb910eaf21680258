"""Auto whitening inside a build: the labelled pairs encoded with the build's model, the (β, γ, dim) grid scored
on the corpus's fit (models/tuning.py), the choice the version is written with."""

from __future__ import annotations

from whitevec.index.build import Chooser
from whitevec.models.encoder import Encoder
from whitevec.models.evaluation import read_pairs
from whitevec.models.tuning import AutoWhitening, check_pairs, tune
from whitevec.models.whitening import Whitening, WhiteningParams

from .jobs import JobContext


def whitening_chooser(ctx: JobContext | None, encoder: Encoder, auto: AutoWhitening, report: dict) -> Chooser:
    """The build's choice of (β, γ, dim): encode the labelled pairs (with progress; cancellable), score the
    grid on the corpus's fit (tune), keep the full report in `report` for the job and a summary for the
    manifest."""
    pairs = read_pairs(auto.pairs)
    check_pairs(pairs.scores, pairs.a, pairs.b, auto.label)

    def on_progress(done: int, total: int) -> None:
        if ctx is not None:
            ctx.check_cancelled()
            ctx.progress(done, total, phase="tuning")

    def choose(fit: Whitening) -> tuple[WhiteningParams, dict]:
        n = len(pairs.scores)
        unique = list(dict.fromkeys(pairs.a + pairs.b))
        where = {t: i for i, t in enumerate(unique)}
        encoded = encoder.encode(unique, on_progress=on_progress).vectors
        vectors = encoded[[where[t] for t in pairs.a + pairs.b]]
        report.update(tune(fit, vectors[:n], vectors[n:], pairs.scores, auto.max_dim, auto.tolerance, auto.seed))
        report["pairs"] = auto.label
        c = report["choice"]
        dim = c["dim"] if report["whiten"] and c["dim"] < fit.d else None
        summary = {k: report[k] for k in ("pairs", "choice", "whiten", "reason", "held_out", "split", "tolerance")}
        return WhiteningParams(c["beta"], c["gamma"], dim), summary
    return choose
