"""One training job that fine-tunes on Chinese STS-B train, then tunes the fine-tuned model's whitening on
zh valid: its `comparison` gives base raw, base whitened (as served), fine-tuned raw, fine-tuned tuned.

    python benchmarks/train_auto_whitening.py [--beta 1 --gamma 1] [--epochs 3] [--tiny]

A real `whitevec serve` on the bundled model. The corpus is every Chinese STS-B sentence (train + valid),
served first with the given (β, γ) — "whitening alone"; then POST /admin/train with `"whitening": "auto"`,
`"activate": true` and `"eval_path"` the valid file (the defaults otherwise: 3 epochs, batch 32).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx

from _util import SHARED, start_server, wait_job

TOKEN = "bench"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 300 train and 150 valid pairs, 1 epoch")
    args = parser.parse_args()
    limit = {"train.tsv": 300, "valid.tsv": 150} if args.tiny else {}
    if args.tiny:
        args.epochs = 1
    lines = {name: (SHARED / "sts-b-zh" / name).read_text(encoding="utf-8").splitlines()[:limit.get(name)]
             for name in ("train.tsv", "valid.tsv")}
    sentences: dict[str, None] = {}
    for name in ("train.tsv", "valid.tsv"):
        for line in lines[name]:
            for s in line.split("\t")[:2]:
                if s.strip():
                    sentences.setdefault(s.strip(), None)
    docs = [{"id": f"zh{i}", "text": s} for i, s in enumerate(sentences)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        base, proc = start_server(data, TOKEN)
        try:
            for name in ("train.tsv", "valid.tsv"):
                (data / "import" / f"zh-{name}").write_text("\n".join(lines[name]) + "\n", encoding="utf-8")
            with httpx.Client(base_url=base, timeout=3600) as http:
                r = http.post("/admin/index/rebuild", headers=ADMIN, json={
                    "documents": docs, "whitening": {"beta": args.beta, "gamma": args.gamma}})
                r.raise_for_status()
                assert wait_job(http, r.json()["job_id"], ADMIN)["state"] == "succeeded"
                started = time.perf_counter()
                r = http.post("/admin/train", headers=ADMIN, json={
                    "path": "zh-train.tsv", "eval_path": "zh-valid.tsv", "epochs": args.epochs, "activate": True,
                    "whitening": "auto"})
                r.raise_for_status()
                job = wait_job(http, r.json()["job_id"], ADMIN)
                seconds = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait()
    if job["state"] != "succeeded":
        raise SystemExit(f"the job failed: {job['error']}")
    tuning = job["result"]["activation"]["tuning"]
    print(f"{len(docs)} corpus sentences; served whitening before training: β={args.beta:g} γ={args.gamma:g}; "
          f"job {seconds:.0f} s")
    print(f"tuning: {tuning['reason']}")
    print(f"held-out half: chosen {tuning['held_out']['chosen']:.2f}, grid best {tuning['held_out']['grid_best']:.2f}, "
          f"raw {tuning['held_out']['raw']:.2f}\n")
    print(f"{'zh valid (all pairs)':<36} {'Spearman':>9} {'hit@1':>7}")
    for label, row in job["result"]["comparison"].items():
        print(f"{label:<36} {row['spearman']:>9.2f} {row['hit_at_1']:>7.2f}")
    print("\n" + json.dumps({k: job["result"]["report"].get(k) for k in ("steps", "n_classes", "seconds")}))


if __name__ == "__main__":
    main()
