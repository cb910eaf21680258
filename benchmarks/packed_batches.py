"""Packed against padded batches, per engine: what running the linear layers on text tokens only saves.

    python benchmarks/packed_batches.py [--engines torch-half onnx openvino openvino-bf16] [--batches 48]
    python benchmarks/packed_batches.py --tiny     # a smoke run (CI): 4 batches of each kind, two engines

Each engine is loaded twice with the bundled model: as it runs (a plain BERT packed: models/packed.py) and
with the packed forward switched off (Hugging Face's padded forward, as before). Both encode the same
batches of STS-B (en) sentences through `Encoder.embed_tokens` (padding, the engine, pooling), alternating
which goes first; the table has the median and quartiles of the per-batch time ratios, so a drifting
machine cancels out. Batch kinds:

- mixed 24: 24 sentences drawn at random, as single-text callers fill a batch over HTTP (32 × 1);
- mixed 64: 64 drawn at random, a full torch-half batch of mixed lengths;
- sorted 64: consecutive sentences of the length-sorted list, as `Encoder.encode` cuts its batches.

The last column is the largest difference between the two layouts' vectors in the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from _util import cpu_flags_line, sts_sentences
from whitevec.models.encoder import Encoder
from whitevec.models.packed import PackedBert


def padded_encoder(engine: str, cache: Path) -> Encoder:
    """The engine as it ran before packing: PackedBert declines every model while the engine is built."""
    with mock.patch.object(PackedBert, "fits", staticmethod(lambda model: False)):
        return Encoder(device="cpu", engine=engine, engine_cache=cache)


def batches(ids: list[list[int]], kind: str, count: int, rng: np.random.Generator) -> list[list[list[int]]]:
    if kind == "sorted 64":
        ordered = sorted(ids, key=len, reverse=True)
        starts = rng.choice(max(1, len(ordered) - 64), count)
        return [ordered[s:s + 64] for s in starts]
    size = int(kind.split()[1])
    return [[ids[i] for i in rng.choice(len(ids), size, replace=False)] for _ in range(count)]


def compare(packed: Encoder, padded: Encoder, work: list[list[list[int]]]) -> tuple[float, list[float], float, float, float]:
    """(text share, per-batch padded/packed time ratios, padded s/s, packed s/s, max |difference|)."""
    ratios, spent, diff = [], {"packed": 0.0, "padded": 0.0}, 0.0
    for i, rows in enumerate(work):
        order = (("packed", packed), ("padded", padded)) if i % 2 else (("padded", padded), ("packed", packed))
        took, out = {}, {}
        for name, enc in order:
            start = time.perf_counter()
            out[name] = enc.embed_tokens(rows)
            took[name] = time.perf_counter() - start
            spent[name] += took[name]
        ratios.append(took["padded"] / took["packed"])
        diff = max(diff, float(np.abs(out["packed"] - out["padded"]).max()))
    tokens = sum(len(r) for rows in work for r in rows)
    share = tokens / sum(len(rows) * max(map(len, rows)) for rows in work)
    n = sum(len(rows) for rows in work)
    return share, ratios, n / spent["padded"], n / spent["packed"], diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # not openvino-mixed: its padded fallback is one f32 graph, another precision than its packed one
    parser.add_argument("--engines", nargs="+", default=["torch-half", "onnx", "openvino", "openvino-bf16"],
                        choices=["torch-half", "onnx", "openvino", "openvino-bf16"])
    parser.add_argument("--batches", type=int, default=48, help="batches of each kind per engine")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 4 batches of each kind, torch-half and onnx")
    args = parser.parse_args()
    engines = ["torch-half", "onnx"] if args.tiny else args.engines
    count = 4 if args.tiny else args.batches
    torch.set_num_threads(2)
    kinds = ("mixed 24", "mixed 64", "sorted 64")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        rows = []
        for engine in engines:
            packed = Encoder(device="cpu", engine=engine, engine_cache=cache)
            padded = padded_encoder(engine, cache)
            ids, _ = packed.tokenize(sts_sentences(512 if args.tiny else 4000))
            rng = np.random.default_rng(0)
            for kind in kinds:
                work = batches(ids, kind, count + 2, rng)
                compare(packed, padded, work[:2])  # warm-up: first shapes, first allocations
                rows.append((engine, kind, *compare(packed, padded, work[2:])))
                print(f"  {engine}, {kind}: done", flush=True)
    print(f"\nbundled model, {count} batches of each kind per engine, 2 threads; CPU flags: {cpu_flags_line()}\n")
    print("| engine | batches | text share of padded tokens | padded s/s | packed s/s | packed speed-up per batch "
          "(quartiles) | max |Δ| of vectors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for engine, kind, share, ratios, padded_rate, packed_rate, diff in rows:
        q1, mid, q3 = np.percentile(ratios, [25, 50, 75])
        print(f"| {engine} | {kind} | {share:.2f} | {padded_rate:.0f} | {packed_rate:.0f} | {mid:.2f}× "
              f"({q1:.2f}-{q3:.2f}) | {diff:.1e} |")


if __name__ == "__main__":
    main()
