"""Server RSS with 1 and with N collections of D documents each on one model: the model is loaded once.

    python benchmarks/collections_memory.py [--collections 10] [--docs 10000]

A real `whitevec serve` on the bundled model. Collection i holds D STS-B (en) sentences, each collection
its own whitening fit and flat FAISS index. Prints RSS after the server starts (model loaded, empty
`default`), after the first collection, and after each further one, with /readyz's `models_loaded`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from _util import start_server, sts_sentences, wait_job

TOKEN = "bench"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def rss_mib(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collections", type=int, default=10)
    parser.add_argument("--docs", type=int, default=10_000)
    args = parser.parse_args()
    sentences = sts_sentences(args.docs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base, proc = start_server(Path(tmp) / "data", TOKEN)
        try:
            with httpx.Client(base_url=base, timeout=3600) as http:
                http.post("/embed", json={"texts": ["warm up"]}).raise_for_status()
                rows.append(("started (model loaded, no documents)", 0, rss_mib(proc.pid), 1))
                for i in range(args.collections):
                    name = f"c{i:02d}"
                    http.put(f"/admin/collections/{name}", json={}, headers=ADMIN).raise_for_status()
                    docs = [{"id": f"{name}-{j}", "text": s} for j, s in enumerate(sentences)]
                    r = http.post(f"/admin/collections/{name}/rebuild", json={"documents": docs}, headers=ADMIN)
                    r.raise_for_status()
                    assert wait_job(http, r.json()["job_id"], ADMIN)["state"] == "succeeded"
                    hits = http.post(f"/collections/{name}/search", json={"query": sentences[0], "k": 1}).json()
                    assert hits["results"][0]["hits"][0]["id"] == f"{name}-0"
                    ready = http.get("/readyz").json()
                    rows.append((f"{i + 1} collection(s)", (i + 1) * len(docs), rss_mib(proc.pid),
                                 ready["models_loaded"]))
                    print(f"{rows[-1][0]:<40} {rows[-1][2]:>8.0f} MiB", flush=True)
        finally:
            proc.terminate()
            proc.wait()
    print(f"\n{'state':<40} {'documents':>10} {'RSS MiB':>8} {'models loaded':>14}")
    for label, docs, rss, models in rows:
        print(f"{label:<40} {docs:>10} {rss:>8.0f} {models:>14}")
    one, last = rows[1][2], rows[-1][2]
    per = (last - one) / max(1, len(rows) - 2)
    print(f"\neach further collection of {args.docs} documents: +{per:.0f} MiB; "
          f"{args.collections} collections: {last:.0f} MiB (1 collection: {one:.0f} MiB; "
          f"{args.collections} one-collection servers would hold {args.collections * one:.0f} MiB)")


if __name__ == "__main__":
    main()
