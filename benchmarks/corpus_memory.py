"""What reading a served corpus costs a rebuild: the whole store as a list vs a paged Corpus.

    python benchmarks/corpus_memory.py [--docs 100000] [--repeat 3]

Writes --docs documents (three short sentences and two metadata keys each) into a docs.sqlite, then
reads them once as `list(Corpus)` (what rebuilds did before: every document as a Python object) and
once by iterating the Corpus (what rebuilds and compaction do now), and prints the peak Python
allocation of each (tracemalloc), median of --repeat. Run by hand.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import tracemalloc
from pathlib import Path

from whitevec.index.store import Corpus, Document, DocumentStore


def peak_mib(read) -> float:
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.sqlite"
        DocumentStore.write(path, (Document(f"doc-{i}", f"sentence number {i} about a topic. " * 3,
                                            {"topic": i % 10, "lang": "en"}) for i in range(args.docs)))
        corpus = Corpus(path, None, [])
        whole = statistics.median(peak_mib(lambda: list(corpus)) for _ in range(args.repeat))
        paged = statistics.median(peak_mib(lambda: sum(len(d.text) for d in corpus)) for _ in range(args.repeat))
        corpus.close()
    print(f"| {args.docs:,} documents | peak MiB |\n|---|---:|\n| whole list | {whole:.1f} |\n"
          f"| Corpus, pages of {Corpus.PAGE:,} | {paged:.1f} |\n\nwhole / paged: {whole / paged:.1f}×")


if __name__ == "__main__":
    main()
