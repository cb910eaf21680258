"""What a large request body costs the server: peak RSS and how long /healthz stalls meanwhile.

    python benchmarks/body_memory.py [--mb 60] [--old-tree DIR]

Starts a real `whitevec serve` (bundled model, demo index), sends one /admin/index/rebuild body of
about --mb megabytes (documents that fail validation at the last one, so no job runs: only the
body's parsing and validation are measured), and reports the server's peak RSS (VmHWM) growth
and the slowest /healthz answer seen while the body was handled. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx

from _util import start_server


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=60)
    parser.add_argument("--old-tree", type=Path, default=None,
                        help="a checkout of an older commit (top-level `service` package) to measure instead")
    args = parser.parse_args()
    text = "the quick brown fox jumps over the lazy dog " * 4
    n = int(args.mb * 1e6 / (len(text) + 40))
    docs = [{"id": f"d{i}", "text": text} for i in range(n)] + [{"id": "bad", "text": ""}]
    body = json.dumps({"documents": docs}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        if args.old_tree is not None:
            base, proc = start_server(Path(tmp) / "data", "bench", ("--demo",), module="service.cli",
                                      env={"PYTHONPATH": str(args.old_tree.resolve())})
        else:
            base, proc = start_server(Path(tmp) / "data", "bench", ("--demo",))
        try:
            before = vm(proc.pid, "VmHWM")
            stalls: list[float] = []
            done = threading.Event()

            def probe() -> None:
                with httpx.Client(base_url=base) as c:
                    while not done.is_set():
                        t = time.perf_counter()
                        c.get("/healthz")
                        stalls.append(time.perf_counter() - t)
                        time.sleep(0.01)

            prober = threading.Thread(target=probe)
            prober.start()
            t = time.perf_counter()
            r = httpx.post(f"{base}/admin/index/rebuild", content=body, timeout=600,
                           headers={"Authorization": "Bearer bench", "content-type": "application/json"})
            seconds = time.perf_counter() - t
            done.set()
            prober.join()
            peak = vm(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait()
    print("| body | documents | answer | seconds | peak RSS growth | slowest /healthz meanwhile |")
    print("|---|---:|---|---:|---:|---:|")
    print(f"| {len(body) / 1e6:.0f} MB | {n:,} | {r.status_code} | {seconds:.1f} | "
          f"{(peak - before) / 2**20:.0f} MiB | {max(stalls) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
