"""Sweep the batcher's budgets (rows and padded tokens per model batch) per engine, over HTTP.

    python benchmarks/batch_sweep.py [--engines onnx torch-half] [--rows 16 32 64 128]
                                     [--tokens 4096 8192 16384] [--sentences 1024] [--repeat 2]
    python benchmarks/batch_sweep.py --tiny      # a smoke run (CI): one engine, one setting, 64 sentences

For every engine and (WHITEVEC_MAX_BATCH, WHITEVEC_MAX_BATCH_TOKENS) pair, a `whitevec serve` on that engine
answers /v1/embeddings under 8 clients × 32 texts and 32 clients × 1 text (STS-B en sentences, the load
generator of peers.py); the table shows sentences/s, p50 and p99 (median of --repeat runs), and the best pair
per engine by 8 × 32 throughput among those whose 32 × 1 p99 is within 10% of the lowest. The engines' defaults
(whitevec.models.engines.BATCH_LIMITS) come from this sweep read beside in-process runs at each batch size:
where the HTTP figures differ by less than run-to-run noise, the in-process gain decides.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from _util import cpu_flags_line, start_server, sts_sentences
from peers import TOKEN, drive, embed_bodies

LOADS = ((8, 32), (32, 1))


def measure(base: str, sentences: list[str], n: int, repeat: int) -> dict[tuple[int, int], tuple[float, float, float]]:
    out = {}
    for conc, per in LOADS:
        asyncio.run(drive(base, "/v1/embeddings", embed_bodies(sentences, per, max(conc * per, 64), "whitevec", 0), conc))
        runs = []
        for rep in range(repeat):
            bodies = embed_bodies(sentences, per, n, "whitevec", n * (rep + 1))
            wall, lat = asyncio.run(drive(base, "/v1/embeddings", bodies, conc))
            ms = np.asarray(lat) * 1000
            runs.append((len(bodies) * per / wall, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))
        out[(conc, per)] = tuple(statistics.median(r[i] for r in runs) for i in range(3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["onnx", "torch-half"])
    parser.add_argument("--rows", nargs="+", type=int, default=[16, 32, 64, 128])
    parser.add_argument("--tokens", nargs="+", type=int, default=[4096, 8192, 16384])
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a smoke run: onnx, 32 rows × 8192 tokens, 64 sentences")
    args = parser.parse_args()
    if args.tiny:
        args.engines, args.rows, args.tokens, args.sentences, args.repeat = ["onnx"], [32], [8192], 64, 1
    sentences = sts_sentences(args.sentences * (args.repeat + 1))
    print(f"{os.cpu_count()} cores, CPU flags: {cpu_flags_line()}; {args.sentences} sentences per load, "
          f"median of {args.repeat}\n")
    print("| engine | rows | tokens | 8×32 sentences/s | 8×32 p99 ms | 32×1 sentences/s | 32×1 p50 ms | 32×1 p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines:
            data = Path(tmp) / engine  # one data dir per engine: its ONNX export is made once
            results = {}
            for rows in args.rows:
                for tokens in args.tokens:
                    env = {"WHITEVEC_ENGINE": engine, "WHITEVEC_MAX_BATCH": str(rows),
                           "WHITEVEC_MAX_BATCH_TOKENS": str(tokens)}
                    base, proc = start_server(data, TOKEN, env=env)
                    try:
                        r = results[(rows, tokens)] = measure(base, sentences, args.sentences, args.repeat)
                    finally:
                        proc.terminate()
                        proc.wait()
                    print(f"| {engine} | {rows} | {tokens} | {r[(8, 32)][0]:.0f} | {r[(8, 32)][2]:.0f} | "
                          f"{r[(32, 1)][0]:.0f} | {r[(32, 1)][1]:.0f} | {r[(32, 1)][2]:.0f} |", flush=True)
            tail = min(r[(32, 1)][2] for r in results.values())
            best = max((k for k, r in results.items() if r[(32, 1)][2] <= 1.1 * tail),
                       key=lambda k: results[k][(8, 32)][0])
            print(f"best for {engine}: {best[0]} rows × {best[1]} tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
