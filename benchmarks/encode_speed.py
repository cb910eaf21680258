"""Encoding throughput: whitevec's Encoder vs sentence-transformers' encode, same model and sentences, one run.

    python benchmarks/encode_speed.py [--file ../shared/data/sts-b-en/dev.tsv] [--batch-size 32] [--repeats 3]
                                      [--engine auto] [--limit N]

Prints a markdown table: sentences/s for each (best of --repeats), and whitevec's ratio to sentence-transformers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _util import cpu_flags_line
from whitevec.models.encoder import Encoder
from whitevec.models.evaluation import read_pairs
from whitevec.models.loader import bundled_model_dir

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts-b-en" / "dev.tsv"


def best_rate(fn, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default=str(DEFAULT_FILE))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", default="auto", help="whitevec's engine (default auto: as the server picks)")
    parser.add_argument("--limit", type=int, default=None, help="the first N sentences only (a smoke run: 64)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    pairs = read_pairs(args.file)
    sentences = list(dict.fromkeys(pairs.a + pairs.b))[: args.limit]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = Encoder(device=device, batch_size=args.batch_size, engine=args.engine)
    st = SentenceTransformer(str(bundled_model_dir()), device=device)
    st.max_seq_length = ours.max_length
    ours.encode(sentences[:64])
    st.encode(sentences[:64])  # warm-up both
    ours_rate = best_rate(lambda: ours.encode(sentences), len(sentences), args.repeats)
    st_rate = best_rate(lambda: st.encode(sentences, batch_size=args.batch_size), len(sentences), args.repeats)
    print(f"{len(sentences)} sentences from {args.file}, batch {args.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, whitevec engine {ours.engine}, best of {args.repeats}; "
          f"CPU flags: {cpu_flags_line()}\n")
    print("| encoder | sentences/s | ratio |")
    print("|---|---:|---:|")
    print(f"| sentence-transformers encode | {st_rate:.0f} | 1.00 |")
    print(f"| whitevec Encoder.encode | {ours_rate:.0f} | {ours_rate / st_rate:.2f} |")


if __name__ == "__main__":
    main()
