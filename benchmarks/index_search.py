"""flat vs ivf vs hnsw on synthetic vectors: build time, search latency, recall@10 against flat.

    python benchmarks/index_search.py [--n 100000] [--dim 384] [--queries 1000] [--data lowrank|clustered]
    python benchmarks/index_search.py --n 1000000 --dim 128 --sweep     # issue 9's scale check

With --sweep, each approximate index is searched with its default parameters and then with the
smallest nprobe / ef_search (doubling) whose recall@10 reaches --recall (0.95), so the table says
what a query costs at that recall.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from whitevec.index.faiss_index import VectorIndex

from whitevec.index.spec import IndexSpec, SearchParams


def synthetic(n: int, d: int, seed: int, kind: str) -> np.ndarray:
    """Unit vectors. `lowrank`: 48 latent factors mapped to d dims plus 10% noise, like real
    sentence embeddings (whose variance sits in few directions). `clustered`: 1000 centres with
    isotropic noise, whose in-cluster neighbours are near-ties (a hard case for graph indexes)."""
    rng = np.random.default_rng(seed)
    if kind == "lowrank":
        basis = np.random.default_rng(42).normal(size=(48, d)).astype(np.float32)
        x = rng.normal(size=(n, 48)).astype(np.float32) @ basis
        x += 0.1 * np.linalg.norm(x, axis=1, keepdims=True) / np.sqrt(d) * rng.normal(size=(n, d)).astype(np.float32)
    else:
        centres = np.random.default_rng(42).normal(size=(1000, d)).astype(np.float32)
        x = centres[rng.integers(0, 1000, n)] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--data", choices=("lowrank", "clustered"), default="lowrank")
    parser.add_argument("--sweep", action="store_true", help="also find the cheapest setting at --recall")
    parser.add_argument("--recall", type=float, default=0.95)
    args = parser.parse_args()
    x, q = synthetic(args.n, args.dim, 0, args.data), synthetic(args.queries, args.dim, 1, args.data)
    rows, exact = [], None

    def measure(index: VectorIndex, label: str, build: float, params: SearchParams = SearchParams()) -> float:
        nonlocal exact
        single = []
        for row in q[:200]:
            t0 = time.perf_counter()
            index.search(row[None], 10, params)
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, ids = index.search(q, 10, params)
        batch = time.perf_counter() - t0
        if exact is None:
            exact = ids
        recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact)]))
        rows.append((label, build, np.percentile(single, 50) * 1000, np.percentile(single, 99) * 1000,
                     args.queries / batch, recall))
        return recall

    specs = [IndexSpec("flat"), IndexSpec("ivf"), IndexSpec("hnsw")]
    if not args.sweep:
        specs[2:2] = [IndexSpec("ivf", nprobe=64)]
        specs.append(IndexSpec("hnsw", ef_search=128))
    for spec in specs:
        t0 = time.perf_counter()
        index = VectorIndex.build(x, spec)
        build = time.perf_counter() - t0
        params = ", ".join(f"{k}={v}" for k, v in index.spec.to_dict().items() if k != "type")
        measure(index, f"{spec.type} {params}".strip(), build)
        if args.sweep and spec.type != "flat":
            name = "nprobe" if spec.type == "ivf" else "ef_search"
            value = 1
            while True:
                recall = measure(index, f"{spec.type} {name}={value} (sweep)", build, SearchParams(**{name: value}))
                if recall >= args.recall or value >= 4096:
                    break
                rows.pop()
                value *= 2
    flat_p50 = rows[0][2]
    print(f"{args.n} {args.data} unit vectors, dim {args.dim}, {args.queries} queries, k=10, CPU\n")
    print("| index | build s | p50 ms (1 query) | p99 ms | speed-up vs flat (p50) | batch queries/s | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, build, p50, p99, qps, recall in rows:
        print(f"| {name} | {build:.1f} | {p50:.2f} | {p99:.2f} | {flat_p50 / p50:.1f}× | {qps:.0f} | {recall:.3f} |")


if __name__ == "__main__":
    main()
