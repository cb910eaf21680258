"""STS evaluation of raw and whitened vectors (the BERT-whitening protocol)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from .encoder import Encoder
from .errors import WhitevecError
from .files import iter_lines
from .whitening import Whitening, WhiteningParams, jl_dim


@dataclass
class StsPairs:
    a: list[str]
    b: list[str]
    scores: np.ndarray


def read_pairs(path: str | Path) -> StsPairs:
    """`sentence1<TAB>sentence2<TAB>score` lines; a malformed line is an error naming it."""
    a, b, scores = [], [], []
    path = Path(path)
    if not path.is_file():
        raise WhitevecError(f"pairs file {path} does not exist")
    for lineno, line in iter_lines(path):
        line = line.rstrip("\n\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            if len(parts) != 3:
                raise ValueError(f"{len(parts)} tab-separated fields")
            score = float(parts[2])
            if not math.isfinite(score):
                raise ValueError(f"score {parts[2]!r} is not a finite number")
        except ValueError as exc:
            raise WhitevecError(
                f"{path.name}:{lineno}: expected sentence1<TAB>sentence2<TAB>score ({exc})"
            ) from exc
        a.append(parts[0])
        b.append(parts[1])
        scores.append(score)
    if len(scores) < 2:
        raise WhitevecError(f"pairs file {path} has fewer than 2 pairs")
    return StsPairs(a, b, np.asarray(scores, dtype=np.float64))


def read_sentences(path: str | Path) -> list[str]:
    """Sentences to fit on: both columns of a pairs file, or one sentence per line."""
    out: list[str] = []
    for _, line in iter_lines(Path(path)):
        parts = line.rstrip("\n\r").split("\t")
        out.extend(p for p in (parts[:2] if len(parts) == 3 else parts[:1]) if p.strip())
    return out


def encode_unique(encoder: Encoder, texts: list[str], progress: bool = False) -> np.ndarray:
    """Encode each distinct text once; rows come back in the order of `texts`."""
    unique = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(unique)}
    vectors = encoder.encode(unique, progress=progress).vectors
    return vectors[[where[t] for t in texts]]


def cosine_spearman(a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> float:
    """Spearman ×100 between the pairs' cosine similarity and the gold scores."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(spearmanr((a * b).sum(axis=1), scores).statistic * 100)


def evaluate_sts(
    encoder: Encoder,
    pairs_path: str | Path,
    betas: list[float],
    gammas: list[float],
    dims: list[int | None],
    fit_path: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Raw score plus one row per (β, γ, dim); whitening is fitted once and reused for every row."""
    pairs = read_pairs(pairs_path)
    n = len(pairs.scores)
    vectors = encode_unique(encoder, pairs.a + pairs.b, progress=progress)
    a, b = vectors[:n], vectors[n:]
    fit_vectors = vectors if fit_path is None else encode_unique(encoder, read_sentences(fit_path), progress)
    whitening = Whitening.fit(fit_vectors, identity=encoder.identity)
    results: list[dict] = []
    for beta, gamma, dim in itertools.product(betas, gammas, dims):
        WhiteningParams(beta, gamma, dim)
        k = whitening.output_dim(dim)
        if whitening.effective_dim(gamma, dim)[0] < k:  # the service would serve fewer dims: no number to show
            results.append({"beta": beta, "gamma": gamma, "dim": k, "spearman": None,
                            "skipped": f"dim {k} is above the fit's rank {whitening.rank} and gamma {gamma:g} > 0 "
                                       f"would amplify noise; the service serves at most dim {whitening.rank} here"})
            continue
        score = cosine_spearman(whitening.transform(a, beta, gamma, k), whitening.transform(b, beta, gamma, k), pairs.scores)
        results.append({"beta": beta, "gamma": gamma, "dim": k, "spearman": round(score, 4)})
    return {
        "model": encoder.identity.name,
        "pooling": encoder.pooling.mode,
        "tokenizer": encoder.tokenizer.kind,
        "n_pairs": n,
        "fit_on": str(fit_path) if fit_path else "eval file",
        "n_fit_vectors": whitening.n_vectors,
        "jl_dim": jl_dim(whitening.n_vectors),
        "raw": round(cosine_spearman(a, b, pairs.scores), 4),
        "rank": whitening.rank,
        "results": results,
    }


def scored(report: dict) -> list[dict]:
    """The rows with a score (not the cells skipped for dim above the fit's rank)."""
    return [r for r in report["results"] if r["spearman"] is not None]


def format_table(report: dict) -> str:
    """A plain-text table with the best row marked; skipped cells show — with a note under the table."""
    best = max(scored(report), key=lambda r: r["spearman"], default=None)
    lines = [
        f"model {report['model']}  pooling {report['pooling']}  tokenizer {report['tokenizer']}  "
        f"pairs {report['n_pairs']}  whitening fitted on {report['fit_on']} ({report['n_fit_vectors']} vectors)",
        f"Johnson-Lindenstrauss guidance: dim > 8.33·ln N = {report['jl_dim']} for N = {report['n_fit_vectors']}",
        f"raw (no whitening): {report['raw']:.2f}",
        "",
        f"  {'beta':>5} {'gamma':>5} {'dim':>5} {'spearman':>9}",
    ]
    for r in report["results"]:
        mark = "*" if r is best else " "
        score = "—" if r["spearman"] is None else f"{r['spearman']:.2f}"
        lines.append(f"{mark} {r['beta']:>5g} {r['gamma']:>5g} {r['dim']:>5d} {score:>9}")
    lines.append("\n(* marks the best row)")
    if len(scored(report)) < len(report["results"]):
        lines.append(f"(— : dim above the fit's rank {report['rank']} with gamma > 0 is not scored: those axes carry "
                     f"no variance in the {report['n_fit_vectors']} fitted vectors and would be amplified noise; the "
                     f"service serves at most dim {report['rank']} there. Fit on more sentences (--fit-file) or use "
                     "gamma 0.)")
    return "\n".join(lines)


#: Line styles and markers by β (colours go by γ): the grid's five βs each get their own.
_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


def line_looks(keys: list[tuple[float, float]]) -> dict[tuple[float, float], tuple[tuple, object, str]]:
    """(colour, line style, marker) per (β, γ): colour from γ (viridis), style and marker from β, so no two
    lines of the grid look alike (a 10-colour cycle repeated itself over 25 lines)."""
    import matplotlib

    gammas = sorted({g for _, g in keys})
    betas = sorted({b for b, _ in keys})
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(gammas), 1)))
    return {(b, g): (tuple(colours[gammas.index(g)]), _STYLES[betas.index(b) % len(_STYLES)],
                     _MARKERS[betas.index(b) % len(_MARKERS)]) for b, g in keys}


def plot_results(report: dict, out: str | Path, chosen: dict | None = None, note: str | None = None) -> Path:
    """Spearman against dim, one line per (β, γ) — colour by γ, line style by β, so each line is its own —
    the raw score as a dashed reference; `chosen` (a row's beta, gamma, dim; default the best row) is marked
    with a star; `note` is written under the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[tuple[float, float], list[tuple[int, float]]] = {}
    for r in scored(report):
        groups.setdefault((r["beta"], r["gamma"]), []).append((r["dim"], r["spearman"]))
    looks = line_looks(list(groups))
    for (beta, gamma), points in sorted(groups.items()):
        points.sort()
        colour, style, marker = looks[beta, gamma]
        ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, linestyle=style, marker=marker,
                markersize=3, label=f"β={beta:g}, γ={gamma:g}")
    if report["raw"] is not None:
        ax.axhline(report["raw"], color="black", linestyle="--", label=f"raw ({report['raw']:.2f})")
    mark = chosen or max(scored(report), key=lambda r: r["spearman"], default=None)
    at = None if mark is None else next((r["spearman"] for r in scored(report) if (r["beta"], r["gamma"], r["dim"])
               == (mark["beta"], mark["gamma"], mark["dim"])), None)
    if at is not None:
        ax.plot([mark["dim"]], [at], marker="*", markersize=16, color="red", linestyle="none", zorder=5,
                label=f"{'chosen' if chosen else 'best'}: β={mark['beta']:g}, γ={mark['gamma']:g}, dim={mark['dim']}")
    ax.set_xlabel("dim")
    ax.set_ylabel("Spearman × 100")
    ax.set_title(f"{report['model']} ({report['pooling']}), {report['n_pairs']} pairs")
    ax.legend(fontsize=6 if len(groups) > 8 else 8, ncol=2 if len(groups) > 8 else 1)
    ax.grid(alpha=0.3)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
