"""Scale-out figures (issue 11): Milvus Lite vs FAISS search at 100k, and the Ray rebuild vs in-process.

    python benchmarks/scale_out.py search [--docs 100000] [--queries 300] [--repeat 3]
    python benchmarks/scale_out.py ray [--docs 4000] [--workers 2] [--repeat 3]

search: the --docs corpus of benchmarks/upsert_load.py (built once with the CLI and cached in --work-dir;
its raw.npy is reused, nothing is re-encoded), written as one version per backend and index type
(FAISS in-process, Milvus Lite through pymilvus), then --queries single-query searches (k=10) one at a
time, through the same Retriever seam the service uses. Prints p50/p99 per backend (median over
--repeat rounds), the ratio to FAISS, and recall@10 against FAISS flat.

ray: `whitevec index build` of --docs documents in-process, then with `--ray local --ray-workers N`
(a local Ray started by the command, N encoder actors with one torch thread each on this machine's
cores). Prints wall seconds and documents/s (median over --repeat), Ray start-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _util import has_index, pct, sts_sentences
from peers import search_docs


def corpus_dir(work: Path, n: int, sentences: list[str]) -> Path:
    cached = work / f"upsert-{n}"
    if not has_index(cached):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "docs.jsonl"
            path.write_text("".join(json.dumps(d) + "\n" for d in search_docs(sentences, n)), encoding="utf-8")
            subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "index", "build", str(path), "--data-dir",
                            str(cached)], check=True)
    new = cached / "collections" / "default"
    return new if new.is_dir() else cached  # a cache written before collections


def search_bench(args: argparse.Namespace) -> None:
    from pymilvus import MilvusClient
    from whitevec.index.build import build_version
    from whitevec.index.spec import IndexSpec
    from whitevec.index.store import DocumentStore
    from whitevec.index.milvus_target import MilvusTarget
    from whitevec.index.parts import DOCS_FILE, RAW_FILE
    from whitevec.index.versions import VersionStore
    from whitevec.models.whitening import WhiteningParams

    sentences = sts_sentences(20_000)
    source = VersionStore(corpus_dir(args.work_dir, args.docs, sentences))
    active = source.active()
    bundle = source.load(active, device="cpu")
    encoder = bundle.encoder
    store = DocumentStore(source.folder(active) / DOCS_FILE)
    docs = [doc for _, doc in store.page(-1, store.count())]
    store.close()
    raw = np.load(source.folder(active) / RAW_FILE)
    queries = [s for s in sentences[-args.queries * 3:]][: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        client = MilvusClient(str(Path(tmp) / "milvus.db"))
        stores = {"faiss": VersionStore(Path(tmp) / "faiss"),
                  "milvus-lite": VersionStore(Path(tmp) / "milvus", MilvusTarget(client, "bench"))}
        specs = {"flat": IndexSpec("flat"), "hnsw": IndexSpec("hnsw", m=32, ef_construction=200, ef_search=128)}
        retrievers, pipeline = {}, None
        for backend, store in stores.items():
            for name, spec in specs.items():
                t = time.perf_counter()
                built = build_version(store, encoder, docs, WhiteningParams(beta=0.0, gamma=0.0), spec,
                                      raw_vectors=raw)  # the service's default whitening
                loaded = store.load(built.version, encoder=encoder, device="cpu", use_gpu=False, checksums=False)
                print(f"built {backend} {name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
                retrievers[(backend, name)] = loaded.retriever
                pipeline = loaded.pipeline
        vectors = pipeline.postprocess(encoder.encode(queries).vectors)

        async def one_round(retriever) -> tuple[list[float], list[list[str]]]:
            params = retriever.search_params(None, None, 4096, 4096)
            times, ids = [], []
            for q in vectors:
                t = time.perf_counter()
                hits = (await retriever.search(q[None, :], 10, params))[0]
                times.append(time.perf_counter() - t)
                ids.append([h.document.id for h in hits])
            return times, ids

        rows = {}
        for key, retriever in retrievers.items():
            asyncio.run(one_round(retriever))  # warm
            p50s, p99s = [], []
            for _ in range(args.repeat):
                times, ids = asyncio.run(one_round(retriever))
                p50, p99 = pct(times)
                p50s.append(p50)
                p99s.append(p99)
            rows[key] = (float(np.median(p50s)), float(np.median(p99s)), ids)
        exact = rows[("faiss", "flat")][2]
        print(f"\nsearch, {args.docs} docs × {vectors.shape[1]} dims, {len(queries)} single queries, k=10, "
              f"median of {args.repeat}")
        print(f"{'backend':<12} {'index':<6} {'p50 ms':>8} {'p99 ms':>8} {'p50 / faiss':>12} {'recall@10':>10}")
        for (backend, name), (p50, p99, ids) in rows.items():
            recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact)])
            ratio = p50 / rows[("faiss", name)][0]
            print(f"{backend:<12} {name:<6} {p50:>8.2f} {p99:>8.2f} {ratio:>11.1f}× {recall:>10.3f}")
        client.close()


def ray_bench(args: argparse.Namespace) -> None:
    sentences = sts_sentences(20_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in search_docs(sentences, args.docs)), encoding="utf-8")
        runs = {"in-process": [], f"ray local, {args.workers} workers": []}
        notes: list[str] = []
        for _ in range(args.repeat):
            for label in runs:
                data = Path(tmp) / "data"
                extra = [] if label == "in-process" else ["--ray", "local", "--ray-workers", str(args.workers)]
                runs[label].append(timed_build(path, data, extra, label, notes))
        base = float(np.median(runs["in-process"]))
        print(f"\nindex build, {args.docs} documents (bundled model), wall seconds incl. start-up, "
              f"median of {args.repeat}")
        print(f"{'path':<24} {'seconds':>8} {'docs/s':>8} {'vs in-process':>14}")
        for label, times in runs.items():
            sec = float(np.median(times))
            print(f"{label:<24} {sec:>8.1f} {args.docs / sec:>8.0f} {base / sec:>13.2f}×")
        for note in notes:
            print(f"note: {note}")


def timed_build(path: Path, data: Path, extra: list[str], label: str, notes: list[str]) -> float:
    """Wall seconds of one `whitevec index build`. A build killed by a signal (Ray's C++ core has been seen
    to abort a driver on some machines) is said in the notes with its stderr and run once more; a second
    failure, or any plain error exit, stops the benchmark with the build's own output."""
    for attempt in (1, 2):
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "whitevec.service.cli.main", "index",
                               "build", str(path), "--data-dir", str(data), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t
        if done.returncode == 0:
            return seconds
        tail = done.stderr[-2000:]
        if done.returncode > 0 or attempt == 2:
            sys.exit(f"index build ({label}) exited with {done.returncode}:\n{tail}")
        notes.append(f"{label}: a build died by signal {-done.returncode} and was run again; its stderr:\n{tail}")
        print(f"{label}: build died by signal {-done.returncode}, running it once more:\n{tail}", file=sys.stderr)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("search")
    s.add_argument("--docs", type=int, default=100_000)
    s.add_argument("--queries", type=int, default=300)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--work-dir", type=Path, default=Path("/tmp/whitevec-upsert"))
    r = sub.add_parser("ray")
    r.add_argument("--docs", type=int, default=4000)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    search_bench(args) if args.what == "search" else ray_bench(args)


if __name__ == "__main__":
    main()
