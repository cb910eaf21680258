"""Server RSS and thread count after each of N re-whitenings and rollbacks: flat when nothing leaks.

    python benchmarks/lifecycle.py [--docs 5000] [--rounds 20] [--old-tree DIR]

A real `whitevec serve` on the bundled model and STS-B sentences. Each round is a rebuild without
re-encoding (a new FAISS index from the stored vectors), two searches, and every third round a rollback
to the first version. `--old-tree`: a folder holding `whitevec/{models,index,service}` of another
commit, measured instead (put on PYTHONPATH ahead of the installed tree).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from _util import start_server, sts_sentences, wait_job

TOKEN = "bench"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def status(pid: int) -> tuple[float, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--old-tree", type=Path, default=None)
    args = parser.parse_args()
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(sts_sentences(args.docs))]
    env = {"PYTHONPATH": str(args.old_tree.resolve())} if args.old_tree else None
    with tempfile.TemporaryDirectory() as tmp:
        base, proc = start_server(Path(tmp) / "data", TOKEN, env=env)
        try:
            with httpx.Client(base_url=base, timeout=600) as c:
                r = c.post("/admin/index/rebuild", json={"documents": docs}, headers=ADMIN)
                first = wait_job(c, r.json()["job_id"], ADMIN)["result"]["version"]
                c.post("/search", json={"query": "a man is playing a guitar"})
                rss0, threads0 = status(proc.pid)
                print(f"{len(docs)} documents, 384 dims; after the first build: RSS {rss0:.1f} MiB, {threads0} threads")
                print("| round | action | RSS MiB | Δ RSS | threads |")
                print("|---:|---|---:|---:|---:|")
                for i in range(1, args.rounds + 1):
                    if i % 3 == 0:
                        c.post(f"/admin/versions/{first}/activate", headers=ADMIN).raise_for_status()
                        action = "rollback"
                    else:
                        r = c.post("/admin/index/rebuild", headers=ADMIN,
                                   json={"reencode": False, "whitening": {"dim": 256 + i % 2}})
                        job = wait_job(c, r.json()["job_id"], ADMIN)
                        assert job["state"] == "succeeded", job
                        action = "re-whiten"
                    for q in ("a man is playing a guitar", "the cat sleeps"):
                        c.post("/search", json={"query": q}).raise_for_status()
                    c.post("/search", json={"query": "rain", "filter": {"none": 1}}).raise_for_status()
                    rss, threads = status(proc.pid)
                    print(f"| {i} | {action} | {rss:.1f} | {rss - rss0:+.1f} | {threads} |")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
