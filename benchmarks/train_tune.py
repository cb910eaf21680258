"""Tune the AM-Softmax defaults: Spearman and paraphrase hit@1 on a pairs file, before and after.

    python benchmarks/train_tune.py [--train ../shared/data/sts-b-zh/train.tsv]
                                    [--eval ../shared/data/sts-b-zh/valid.tsv] [--tiny]

Each row fine-tunes the bundled model afresh with one setting (2 torch threads) and prints
a table; the chosen defaults of TrainConfig should sit on the best row. Run by hand.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _util import SHARED
from whitevec.models.encoder import Encoder
from whitevec.models.training import TrainConfig, classes_from_pairs, evaluate_pairs, read_training_file, train

SETTINGS = [  # (lr, centre_lr, epochs)
    (2e-5, 1e-3, 1),
    (2e-5, 1e-2, 1),
    (5e-5, 1e-2, 1),
    (5e-5, 1e-2, 3),
    (1e-4, 1e-2, 2),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, default=SHARED / "sts-b-zh" / "train.tsv")
    parser.add_argument("--eval", type=Path, default=SHARED / "sts-b-zh" / "valid.tsv")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: the first setting, 3 steps")
    args = parser.parse_args()
    torch.set_num_threads(2)
    _, pairs = read_training_file(args.train)
    data = classes_from_pairs(pairs, 4.0)
    base = evaluate_pairs(Encoder(device="cpu"), args.eval)
    print(f"{args.train.name}: {data.n_classes} classes, {len(data.texts)} sentences; eval on {args.eval}")
    print(f"before: Spearman {base['spearman']:.2f}, hit@1 {base['hit_at_1']:.2f}")
    print(f"{'lr':>8} {'centre_lr':>9} {'epochs':>6} {'steps':>5} {'seconds':>7} {'spearman':>8} {'hit@1':>6}")
    for lr, centre_lr, epochs in SETTINGS[:1] if args.tiny else SETTINGS:
        encoder = Encoder(device="cpu")
        config = TrainConfig(lr=lr, centre_lr=centre_lr, epochs=epochs, threads=2, max_steps=3 if args.tiny else None)
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = train(encoder, data, config, Path(out) / "m")
            seconds = time.perf_counter() - started
        after = evaluate_pairs(encoder, args.eval)
        print(f"{lr:>8g} {centre_lr:>9g} {epochs:>6d} {report['steps']:>5d} {seconds:>7.0f} "
              f"{after['spearman']:>8.2f} {after['hit_at_1']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
