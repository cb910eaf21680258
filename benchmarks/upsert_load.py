"""Upsert throughput and /search latency while upserts run (issue 10).

    python benchmarks/upsert_load.py [--docs 10000] [--batch 100] [--calls 10] [--work-dir DIR]

Builds a corpus of --docs documents (two STS-B sentences each) with the CLI (cached in --work-dir,
copied for each run, since upserts change it), serves it, then times --calls upserts of --batch new
documents each (sequential), and /search p50/p99 from one client alone and while the upserts run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from _util import has_index, pct, start_server, sts_sentences
from peers import search_docs

TOKEN = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/whitevec-upsert"),
                        help="where the built corpus is cached between runs")
    args = parser.parse_args()
    pool = sts_sentences(20_000)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with tempfile.TemporaryDirectory() as tmp:
        cached = args.work_dir / f"upsert-{args.docs}"
        if not has_index(cached):
            path = Path(tmp) / "docs.jsonl"
            path.write_text("".join(json.dumps(d) + "\n" for d in search_docs(pool, args.docs)), encoding="utf-8")
            subprocess.run([sys.executable, "-m", "whitevec.service.cli.main", "index", "build", str(path), "--data-dir",
                            str(cached)], check=True, stdout=subprocess.DEVNULL)  # its stderr says why it failed
        data = Path(tmp) / "data"
        shutil.copytree(cached, data, ignore=shutil.ignore_patterns(".lock"))
        base, proc = start_server(data, TOKEN)
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                queries = pool[-300:]

                def searches(n: int, out: list[float], stop: threading.Event | None = None) -> None:
                    for i in range(n):
                        if stop is not None and stop.is_set():
                            return
                        t0 = time.perf_counter()
                        assert client.post("/search", json={"query": queries[i % len(queries)], "k": 10}).status_code == 200
                        out.append(time.perf_counter() - t0)

                quiet: list[float] = []
                searches(100, quiet)
                busy: list[float] = []
                stop = threading.Event()
                searcher = threading.Thread(target=searches, args=(10_000, busy, stop))
                searcher.start()
                times = []
                for c in range(args.calls):
                    docs = [{"id": f"new-{c}-{j}", "text": f"{pool[(c * args.batch + j) % len(pool)]} (update {c})"}
                            for j in range(args.batch)]
                    t0 = time.perf_counter()
                    r = client.post("/admin/documents", json={"documents": docs}, headers=headers)
                    assert r.status_code == 200, r.text
                    times.append(time.perf_counter() - t0)
                stop.set()
                searcher.join()
        finally:
            proc.terminate()
            proc.wait()
    total = args.calls * args.batch
    print(f"{args.docs} documents (flat index, default engine), {args.calls} upserts of {args.batch} documents, "
          f"2 cores\n")
    print(f"upsert: {total / sum(times):.0f} docs/s; per call p50 {np.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms\n")
    print("| /search (1 client) | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    print("| alone | %.1f | %.1f |" % pct(quiet))
    print("| while upserts run | %.1f | %.1f |" % pct(busy))


if __name__ == "__main__":
    main()
