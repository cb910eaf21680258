"""Latency of /search and /embed on loopback, bundled model, 10k-document index; rebuild throughput.

    python benchmarks/service_latency.py [--docs 10000] [--requests 200]

Starts a real `whitevec serve` on a free loopback port with a temporary data dir,
rebuilds the index through the admin endpoint with real STS-B sentences, then
times sequential requests (one client) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
from pathlib import Path

import httpx

from _util import pct, start_server, sts_sentences, wait_job

TOKEN = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    sentences = sts_sentences(args.docs + 200)
    docs, queries = sentences[: args.docs], sentences[args.docs :]
    with tempfile.TemporaryDirectory() as tmp:
        base, proc = start_server(Path(tmp), TOKEN)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                start = time.perf_counter()
                r = client.post("/admin/index/rebuild", headers=headers,
                                json={"documents": [{"id": f"d{i}", "text": t} for i, t in enumerate(docs)]})
                job = wait_job(client, r.json()["job_id"], headers)
                wall = time.perf_counter() - start
                assert job["state"] == "succeeded", job
                rows = []
                cases = [
                    ("/search, 1 query, k=10", "/search", lambda i: {"query": queries[i % len(queries)], "k": 10}),
                    ("/embed, 1 text", "/embed", lambda i: {"texts": [queries[i % len(queries)]]}),
                    ("/embed, 32 texts", "/embed",
                     lambda i: {"texts": [queries[(i + j) % len(queries)] for j in range(32)]}),
                ]
                for label, path, body in cases:
                    for i in range(5):
                        client.post(path, json=body(i))
                    times = []
                    for i in range(args.requests):
                        t0 = time.perf_counter()
                        assert client.post(path, json=body(i)).status_code == 200
                        times.append(time.perf_counter() - t0)
                    rows.append((label, *pct(times)))

                def one(i: int) -> float:
                    t0 = time.perf_counter()
                    assert client.post("/search", json={"query": queries[i % len(queries)]}).status_code == 200
                    return time.perf_counter() - t0
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    t0 = time.perf_counter()
                    times = list(pool.map(one, range(args.requests)))
                    rate = args.requests / (time.perf_counter() - t0)
                rows.append(("/search, 8 concurrent clients", *pct(times)))
        finally:
            proc.terminate()
            proc.wait()
    print(f"{len(docs)} documents (STS-B en sentences), bundled all-MiniLM-L6-v2, flat index, loopback, "
          f"{args.requests} requests each\n")
    print(f"rebuild: {job['result']['seconds']:.1f} s in the job ({len(docs) / job['result']['seconds']:.0f} docs/s), "
          f"{wall:.1f} s end to end ({len(docs) / wall:.0f} docs/s)\n")
    print("| request | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:.1f} | {p99:.1f} |")
    print(f"\n8 concurrent clients: {rate:.0f} searches/s")


if __name__ == "__main__":
    main()
