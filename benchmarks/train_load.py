"""Search latency while an AM-Softmax training job runs, against idle, on one server.

    python benchmarks/train_load.py [--requests 200] [--max-steps 60]

Starts `whitevec serve --demo` (bundled model) on loopback, measures /search p50/p99
idle, then starts POST /admin/train on STS-B en train pairs (copied at run time into
the temporary data dir's import folder, never into the repo) and measures again while
the job is running. The training process gets WHITEVEC_TRAIN_THREADS (default: half the cores).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from _util import SHARED, pct, start_server, wait_job

TOKEN = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=60)
    args = parser.parse_args()
    queries = ["will it rain tomorrow?", "cheap flights to tokyo", "how to reset my router", "明天会下雨吗"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "import").mkdir()
        shutil.copy(SHARED / "sts-b-en" / "train.tsv", Path(tmp) / "import" / "train.tsv")
        base, proc = start_server(Path(tmp), TOKEN, ("--demo",))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                def measure() -> list[float]:
                    out = []
                    for i in range(args.requests):
                        t0 = time.perf_counter()
                        assert client.post("/search", json={"query": queries[i % 4], "k": 10}).status_code == 200
                        out.append(time.perf_counter() - t0)
                    return out

                measure()  # warm-up
                idle = measure()
                r = client.post("/admin/train", headers=headers,
                                json={"path": "train.tsv", "max_steps": args.max_steps, "activate": False})
                job_id = r.json()["job_id"]
                while client.get(f"/admin/jobs/{job_id}", headers=headers).json()["progress"]["done"] < 1:
                    time.sleep(0.2)
                busy = measure()
                still = client.get(f"/admin/jobs/{job_id}", headers=headers).json()["state"] == "running"
                job = wait_job(client, job_id, headers)
        finally:
            proc.terminate()
            proc.wait()
    i50, i99 = pct(idle)
    b50, b99 = pct(busy)
    print(f"/search on the demo index, bundled model, {args.requests} sequential requests each; training job "
          f"{job['state']} ({job['result']['report']['steps']} steps, "
          f"{job['result']['report']['steps_per_second']:.2f} steps/s); job still running at the end: {still}\n")
    print("| condition | p50 ms | p99 ms | p50 ratio |")
    print("|---|---:|---:|---:|")
    print(f"| idle | {i50:.1f} | {i99:.1f} | 1.00 |")
    print(f"| training running | {b50:.1f} | {b99:.1f} | {b50 / i50:.2f} |")


if __name__ == "__main__":
    main()
