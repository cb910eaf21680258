"""Choosing whitening's (β, γ, dim) from labelled pairs: a grid chosen on one half of the pairs and
reported on the other, then the smallest dim within a tolerance of the best (at that dim, no variance
equalisation when that is within the tolerance too).

One fit serves the whole grid: one kernel per γ (dims are its first columns), and the cosines of every
dim prefix come from running sums over the columns, so the grid costs 5 matrix products per half, not
one per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from .errors import WhiteningError
from .whitening import Whitening, jl_dim

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_TOLERANCE = 0.3
MIN_PAIRS = 20
#: More labelled pairs than this add little to a choice between ~130 cells and cost encoding time.
MAX_PAIRS = 50_000
#: Above this mean cosine between random corpus pairs the raw space is anisotropic enough that full
#: whitening was best (bundled model on Chinese STS-B: 0.51); below it, a rotation (English: 0.025).
ANISOTROPY_THRESHOLD = 0.25


@dataclass(frozen=True)
class AutoWhitening:
    """What a rebuild asks for: tune on the labelled pairs in the file `pairs` (`label`: how the manifest
    names it, e.g. its name in the import folder)."""

    pairs: str
    label: str
    max_dim: int | None = None
    tolerance: float = DEFAULT_TOLERANCE
    seed: int = 0


def check_pairs(scores: np.ndarray, a: list[str], b: list[str], label: str) -> None:
    """Refuse pairs no choice can be made on, before any encoding: too few, too many, or all alike."""
    n = len(scores)
    if n < MIN_PAIRS:
        raise WhiteningError(f"{label}: auto whitening needs at least {MIN_PAIRS} labelled pairs to choose on one half "
                             f"and report on the other; the file has {n}")
    if n > MAX_PAIRS:
        raise WhiteningError(f"{label}: {n} pairs are more than auto whitening takes ({MAX_PAIRS}); give a sample")
    if np.ptp(scores) == 0:
        raise WhiteningError(f"{label}: every pair has the score {scores[0]:g}; Spearman needs scores that differ")
    if len(set(a) | set(b)) < 3:
        raise WhiteningError(f"{label}: the pairs hold fewer than 3 distinct sentences; nothing can be ranked")


def dim_ladder(d: int, n_corpus: int, max_dim: int | None = None) -> list[int]:
    """d, 3d/4, d/2, d/4, d/8, … down to the Johnson–Lindenstrauss estimate for the corpus size (and
    that estimate itself); at most `max_dim`."""
    top = min(d, max_dim or d)
    floor = min(jl_dim(n_corpus), top)
    dims = {top, max(floor, (3 * top) // 4)}
    k = top // 2
    while k > floor:
        dims.add(k)
        k //= 2
    dims.add(floor)
    return sorted(dims, reverse=True)


def _spearman(x: np.ndarray, scores: np.ndarray) -> float | None:
    """Spearman ×100, None where it is undefined (constant cosines: a 1-dim space, identical sentences)."""
    value = float(spearmanr(x, scores).statistic * 100)
    return value if np.isfinite(value) else None


def _prefix_cosines(a: np.ndarray, b: np.ndarray, dims: list[int]) -> np.ndarray:
    """Cosine of each pair over the first k columns, for every k in dims: shape (len(dims), n)."""
    dots = np.cumsum(a * b, axis=1)
    na, nb = np.cumsum(a * a, axis=1), np.cumsum(b * b, axis=1)
    cols = np.array(dims) - 1
    return (dots[:, cols] / np.sqrt(np.maximum(na[:, cols] * nb[:, cols], 1e-24))).T


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the half the choice is made on and the half it is reported on (disjoint, seeded)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def tune(fit: Whitening, a: np.ndarray, b: np.ndarray, scores: np.ndarray, max_dim: int | None = None,
         tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> dict:
    """Score raw vectors and every (β, γ) in GRID² × dim ladder on pairs (a[i], b[i], scores[i]); choose on
    one half, report the other. The choice is the smallest dim whose Spearman on the choosing half is within
    `tolerance` of that half's best; at that dim, γ = 0 if a γ = 0 cell is within the tolerance, else the
    best cell there. Returns the table, the choice and why."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < MIN_PAIRS:
        raise WhiteningError(f"auto whitening needs at least {MIN_PAIRS} labelled pairs to choose on one half and "
                             f"report on the other; the pairs file has {len(scores)}")
    choose, report = split(len(scores), seed)
    dims = dim_ladder(fit.d, fit.n_vectors, max_dim)
    rows = []
    if max_dim is None or max_dim >= fit.d:  # raw vectors keep every dim: a candidate only if that is allowed
        raw_cos = _prefix_cosines(np.asarray(a, np.float64), np.asarray(b, np.float64), [fit.d])[0]
        rows.append({"raw": True, "beta": 0.0, "gamma": 0.0, "dim": fit.d,
                     "choose": _spearman(raw_cos[choose], scores[choose]),
                     "report": _spearman(raw_cos[report], scores[report])})
    for gamma in GRID:
        # past the fit's rank γ > 0 amplifies noise: those cells are scored at the rank instead
        usable = dims if gamma == 0 else sorted({min(k, fit.rank) for k in dims}, reverse=True)
        for beta in GRID:
            ta = fit.transform(a, beta, gamma, fit.d).astype(np.float64)  # every column: dims are prefixes
            tb = fit.transform(b, beta, gamma, fit.d).astype(np.float64)
            for k, cos in zip(usable, _prefix_cosines(ta, tb, usable)):
                rows.append({"raw": False, "beta": beta, "gamma": gamma, "dim": int(k),
                             "choose": _spearman(cos[choose], scores[choose]),
                             "report": _spearman(cos[report], scores[report])})
    for row in rows:
        for key in ("choose", "report"):
            row[key] = None if row[key] is None else round(row[key], 4)
    scored = [r for r in rows if r["choose"] is not None and r["report"] is not None]
    if not scored:
        raise WhiteningError("no setting gives a defined Spearman on these pairs (their cosines do not vary): "
                             "give pairs of different sentences, or a larger max_dim")
    best = max(scored, key=lambda r: r["choose"])
    near = [r for r in scored if r["choose"] >= best["choose"] - tolerance]
    smallest = min(r["dim"] for r in near)
    at_dim = [r for r in near if r["dim"] == smallest]
    # at that dim, no variance equalisation when it is as good (γ = 0 amplifies nothing a query brings);
    # otherwise the best there
    plain = [r for r in at_dim if r["gamma"] == 0]
    chosen = max(plain or at_dim, key=lambda r: (r["choose"], r["raw"]))
    held_best = max(scored, key=lambda r: r["report"])
    whiten = not chosen["raw"] and not (chosen["beta"] == 0 and chosen["gamma"] == 0 and chosen["dim"] == fit.d)
    what = "do not whiten (raw vectors)" if chosen["raw"] else describe(chosen["beta"], chosen["gamma"], chosen["dim"],
                                                                          fit.d)
    reason = (f"best on the choosing half: β={best['beta']:g} γ={best['gamma']:g} dim={best['dim']}"
              f"{' (raw)' if best['raw'] else ''}, Spearman {best['choose']:.2f}; the smallest dim within "
              f"{tolerance:g} of it is {chosen['dim']}, where β={chosen['beta']:g} γ={chosen['gamma']:g} scores "
              f"{chosen['choose']:.2f}{' (γ = 0 preferred when within the tolerance)' if plain else ''}: {what}")
    return {
        "choice": {"beta": chosen["beta"], "gamma": chosen["gamma"], "dim": chosen["dim"]},
        "whiten": whiten,
        "reason": reason,
        "held_out": {"chosen": chosen["report"], "grid_best": held_best["report"],
                     "grid_best_at": {k: held_best[k] for k in ("beta", "gamma", "dim", "raw")},
                     "raw": rows[0]["report"] if rows[0]["raw"] else None},
        "split": {"choose": len(choose), "report": len(report), "seed": seed},
        "tolerance": tolerance,
        "dims": dims,
        "rank": fit.rank,
        "table": rows,
    }


def describe(beta: float, gamma: float, dim: int, d: int) -> str:
    """What a (β, γ, dim) does to the vectors, in words: centring, rotation, truncation, equalisation."""
    centre = "centre, " if beta == 1 else f"centre by {beta:g} of the mean, " if beta else ""
    keep = f"keep all {d} dims" if dim >= d else f"truncate to {dim} of {d} dims"
    if gamma == 0:
        return f"{centre}rotate and {keep}, no variance equalisation"
    equalise = "equalise every direction's variance" if gamma == 1 else f"equalise variance by γ={gamma:g}"
    return f"whiten ({centre}rotate, {equalise}, {keep})"


def plot_tuning(report: dict, model: str, out: Path) -> Path:
    """Held-out Spearman against dim, one line per (β, γ), the chosen setting starred."""
    from .evaluation import plot_results

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"beta": r["beta"], "gamma": r["gamma"], "dim": r["dim"], "spearman": r["report"]}
            for r in report["table"] if not r["raw"] and r["report"] is not None]
    rank = report.get("rank")
    capped = rank is not None and any(r["gamma"] > 0 for r in rows) and max(r["dim"] for r in rows) > rank
    note = (f"γ > 0 lines stop at dim {rank}, the fit's rank: past it there is no variance to equalise, only "
            "noise" if capped else None)
    return plot_results({"results": rows, "raw": report["held_out"]["raw"], "model": model,
                         "pooling": f"auto whitening on {report.get('pairs', 'pairs')}",
                         "n_pairs": report["split"]["report"]}, out, chosen=report["choice"], note=note)


def anisotropy(raw: np.ndarray, samples: int = 5000, seed: int = 0) -> float:
    """Mean cosine between random pairs of corpus vectors: near 0 for an isotropic space."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(raw), samples), rng.integers(0, len(raw), samples)
    x, y = np.asarray(raw[i], np.float64), np.asarray(raw[j], np.float64)
    cos = (x * y).sum(axis=1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
    return float(cos[i != j].mean()) if (i != j).any() else 0.0


def suggestion(mean_cos: float) -> dict:
    """An unlabelled guess at (β, γ) from the corpus's anisotropy — a hint, never applied by itself."""
    full = mean_cos > ANISOTROPY_THRESHOLD
    return {"beta": 1.0 if full else 0.0, "gamma": 1.0 if full else 0.0, "anisotropy": round(mean_cos, 4),
            "why": (f"random corpus pairs have mean cosine {mean_cos:.3f} "
                    f"{'>' if full else '<='} {ANISOTROPY_THRESHOLD}: "
                    + ("an anisotropic space, where full whitening helped" if full
                       else "a near-isotropic space, where whitening did not help")
                    + "; label pairs and use auto whitening to be sure")}
