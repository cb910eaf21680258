"""Auto whitening on the shared STS-B files: what it chooses, its held-out Spearman against the grid's best,
the grid's time, and whether an unsupervised proxy would have predicted the best (β, γ).

    python benchmarks/auto_whitening.py [--tolerance 0.3] [--seeds 0 1 2] [--tiny]

Per language, the bundled model (ONNX) encodes the corpus (every sentence of train + held-out file), the
whitening is fitted on it (as a rebuild does), and `whitevec.models.tuning.tune` scores the grid on the
held-out file's pairs (en dev, zh valid): chosen on one half, reported on the other.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _util import SHARED

FILES = {"en": ("sts-b-en/train.tsv", "sts-b-en/dev.tsv"), "zh": ("sts-b-zh/train.tsv", "sts-b-zh/valid.tsv")}


def proxies(fit, raw: np.ndarray, seed: int = 0) -> dict:
    """Unsupervised signals a rule could read: how anisotropic the raw space is."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(raw), 5000), rng.integers(0, len(raw), 5000)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    cos = (unit[i] * unit[j]).sum(axis=1)
    lam = fit.lambdas
    return {"mean_random_cos": float(cos.mean()), "top10_variance": float(lam[:10].sum() / lam.sum()),
            "mean_norm_ratio": float(np.linalg.norm(fit.mu) / np.sqrt(lam.sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerance", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache", type=Path, default=None, help="keep the encoded vectors here between runs")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 200 pairs per language, one seed")
    args = parser.parse_args()
    limit = 200 if args.tiny else None
    if args.tiny:
        args.seeds = args.seeds[:1]
    from whitevec.models.encoder import Encoder
    from whitevec.models.evaluation import encode_unique, read_pairs
    from whitevec.models.tuning import tune
    from whitevec.models.whitening import Whitening

    encoder = Encoder(None, device="cpu", engine="onnx")
    summary = []
    for lang, (train, held) in FILES.items():
        pairs = read_pairs(SHARED / held)
        files = (held,) if args.tiny else (train, held)
        if limit:
            pairs = type(pairs)(pairs.a[:limit], pairs.b[:limit], pairs.scores[:limit])
        corpus = list(dict.fromkeys(s for f in files for p in [read_pairs(SHARED / f)] for s in p.a + p.b))
        started = time.perf_counter()
        n = len(pairs.scores)
        cache = args.cache / f"{lang}.npz" if args.cache else None
        if cache is not None and cache.is_file():
            saved = np.load(cache)
            raw, vectors = saved["raw"], saved["pairs"]
        else:
            raw = encoder.encode(corpus).vectors
            vectors = encode_unique(encoder, pairs.a + pairs.b)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, raw=raw, pairs=vectors)
        encoded = time.perf_counter() - started
        started = time.perf_counter()
        fit = Whitening.fit(raw, identity=encoder.identity)
        fitted = time.perf_counter() - started
        for seed in args.seeds:
            started = time.perf_counter()
            result = tune(fit, vectors[:n], vectors[n:], pairs.scores, tolerance=args.tolerance, seed=seed)
            grid_s = time.perf_counter() - started
            c, h = result["choice"], result["held_out"]
            summary.append((lang, seed, c, result["whiten"], h, grid_s))
            print(f"{lang} seed {seed}: {result['reason']}")
        best_by_bg: dict[tuple, float] = {}
        for row in result["table"]:
            key = ("raw",) if row["raw"] else (row["beta"], row["gamma"])
            best_by_bg[key] = max(best_by_bg.get(key, -1e9), row["report"])
        print(f"\n{lang}: {len(corpus)} corpus sentences, {n} pairs; encoding {encoded:.1f} s, fit {fitted:.2f} s")
        print("best held-out Spearman per (β, γ) over dims (seed %d):" % args.seeds[-1])
        print("   β\\γ " + " ".join(f"{g:>7}" for g in (0, 0.25, 0.5, 0.75, 1)) + f"    raw {best_by_bg[('raw',)]:.2f}")
        for beta in (0, 0.25, 0.5, 0.75, 1):
            print(f"{beta:>7} " + " ".join(f"{best_by_bg[(float(beta), float(g))]:>7.2f}" for g in (0, 0.25, 0.5, 0.75, 1)))
        print(f"proxies: {proxies(fit, raw)}\n")
    train = read_pairs(SHARED / "sts-b-en/train.tsv")
    n = 100 if args.tiny else 3000
    vectors = encode_unique(encoder, train.a[:n] + train.b[:n])
    fit_corpus = list(dict.fromkeys(train.a + train.b))[: 600 if args.tiny else None]
    fit = Whitening.fit(encoder.encode(fit_corpus).vectors, identity=encoder.identity)
    started = time.perf_counter()
    tune(fit, vectors[:n], vectors[n:], train.scores[:n])
    print(f"grid on {n} pairs of {fit.d} dims (STS-B en train), beyond encoding: {time.perf_counter() - started:.2f} s\n")
    print(f"{'lang':<5} {'seed':>4} {'β':>5} {'γ':>5} {'dim':>4} {'whiten':>6} {'held-out chosen':>15} "
          f"{'held-out grid best':>18} {'raw':>7} {'grid s':>7}")
    for lang, seed, c, whiten, h, grid_s in summary:
        print(f"{lang:<5} {seed:>4} {c['beta']:>5} {c['gamma']:>5} {c['dim']:>4} {str(whiten):>6} {h['chosen']:>15.2f} "
              f"{h['grid_best']:>18.2f} {h['raw']:>7.2f} {grid_s:>7.2f}")


if __name__ == "__main__":
    main()
