"""Search latency of a collection with passages at scale: 100,000 documents split into about 1,000,000
passage rows, against the same documents as one row each.

    python benchmarks/passage_scale.py [--docs 100000] [--max-tokens 32] [--overlap 4] [--queries 200]
                                       [--work-dir /tmp/whitevec-passage-scale] [--tiny]

Encoding a million passages takes hours on a laptop CPU, and search latency does not depend on what the
vectors mean, so the vectors here are random (384 dims, the bundled model's), while everything else is
whitevec's own: documents built from STS-B (en) sentences to ~1,000 characters, split by the bundled
model's tokenizer into passages of `--max-tokens`, written by `build_version` as a real FAISS version
(whitening fitted on the passages, a flat index, docs.sqlite, the lexical index), loaded with
`load_version` and searched through the collection's layout (passages: ranked, heads fetched, grouped into
k distinct documents) one query at a time, as a single HTTP request would be. Prints the build time, the
version's files, the document count after load, search p50/p99 for k = 10 through the layout, and the
index's own p50 for its top k rows (what grouping adds is the difference).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from _util import cpu_flags_line, long_texts
from whitevec.index.build import build_version
from whitevec.index.loading import load_version
from whitevec.index.passage_rows import layout_for, Grouping
from whitevec.index.hybrid import Fusion
from whitevec.index.spec import IndexSpec
from whitevec.index.store import Document
from whitevec.index.versions import VersionStore
from whitevec.models.encoder import Encoder
from whitevec.models.passages import PassageSetting
from whitevec.models.whitening import WhiteningParams


def documents(n: int) -> list[Document]:
    return [Document(f"doc-{i}", text, {"part": i % 10}) for i, text in enumerate(long_texts(n))]


def build(root: Path, encoder: Encoder, docs: list[Document], setting: PassageSetting | None,
          spec: IndexSpec) -> tuple[str, dict]:
    layout = layout_for(setting, encoder.tokenizer)
    t0 = time.perf_counter()
    rows = layout.rows(docs)
    split = time.perf_counter() - t0
    raw = np.random.default_rng(1).standard_normal((len(rows), encoder.dim), dtype=np.float32)
    store = VersionStore(root)
    t0 = time.perf_counter()
    result = build_version(store, encoder, rows, WhiteningParams(0.0, 0.0, None), spec, raw_vectors=raw,
                           passages=layout.manifest(len(docs), len(rows)))
    store.activate(result.version)
    folder = store.folder(result.version)
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    return result.version, {"rows": len(rows), "split s": split, "build s": time.perf_counter() - t0,
                            "MB on disk": sum(files.values()) / 1e6}


async def latencies(bundle, queries: np.ndarray, k: int) -> tuple[list[float], list[float]]:
    """Per query: the layout's search (grouped into documents), and the index's own top k rows (ungrouped)."""
    params = bundle.retriever.search_params(None, None, 1024, 4096)
    grouped, rows = [], []
    for q in queries:
        t0 = time.perf_counter()
        await bundle.layout.search(bundle.retriever, "dense", ["q"], q[None, :], k, params, None, Fusion(), False,
                                   Grouping())
        grouped.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        await bundle.retriever.search(q[None, :], k, params)
        rows.append(1000 * (time.perf_counter() - t0))
    return grouped, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index", default="flat", choices=["flat", "ivf", "hnsw"],
                        help="the index type (its parameters resolved from the row count, as a rebuild does)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/whitevec-passage-scale"))
    parser.add_argument("--tiny", action="store_true", help="300 documents, 20 queries (a smoke run)")
    args = parser.parse_args()
    if args.tiny:
        args.docs, args.queries = 300, 20
    encoder = Encoder(None, device="cpu", engine="torch")
    print(f"# passages at scale: {args.docs} documents, passages of {args.max_tokens} tokens overlapping by "
          f"{args.overlap}, random {encoder.dim}-dim vectors, {args.index} index, k {args.k}; CPU flags: "
          f"{cpu_flags_line()}")
    docs = documents(args.docs)
    queries = np.random.default_rng(2).standard_normal((args.queries, encoder.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"{'collection':<10} {'rows':>9} {'split s':>8} {'build s':>8} {'MB on disk':>10} {'count s':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'index p50':>9}")
    for kind, setting in (("whole", None), ("passages", PassageSetting(args.max_tokens, args.overlap))):
        root = args.work_dir / kind
        shutil.rmtree(root, ignore_errors=True)
        version, figures = build(root, encoder, docs, setting, IndexSpec(args.index))
        bundle = load_version(VersionStore(root), version, encoder, device="cpu", use_gpu=False)
        try:
            assert bundle.layout.setting == setting
            t0 = time.perf_counter()
            count = bundle.layout.count(bundle.retriever)
            counted = time.perf_counter() - t0
            assert count == len(docs), count
            times, index_times = asyncio.run(latencies(bundle, queries, args.k))
            p50, p99 = statistics.median(times), float(np.percentile(times, 99))
            print(f"{kind:<10} {figures['rows']:>9} {figures['split s']:>8.1f} {figures['build s']:>8.1f} "
                  f"{figures['MB on disk']:>10.1f} {counted:>8.2f} {p50:>7.1f} {p99:>7.1f} "
                  f"{statistics.median(index_times):>9.1f}")
        finally:
            bundle.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
