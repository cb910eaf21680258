"""The `whitevec` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from models.errors import WhitevecError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from models.pooling import POOLINGS
    from models.tokenizers import TOKENIZERS

    p.add_argument("--model", default=None, help="local Hugging Face model folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="default: the folder's sentence-transformers pooling, else first-last-avg")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default=None, help="bert (default) or wobert (jieba words)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per text; longer texts are truncated and counted")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")


def _encoder(args: argparse.Namespace):
    from models.encoder import Encoder

    return Encoder(args.model, pooling=args.pooling, tokenizer=args.tokenizer, max_length=args.max_length,
                   device=args.device, batch_size=args.batch_size)


def cmd_eval_sts(args: argparse.Namespace) -> int:
    from models.evaluation import evaluate_sts, format_table, plot_results

    encoder = _encoder(args)
    dims = args.dim or [None]
    report = evaluate_sts(encoder, args.file, args.beta, args.gamma, dims, fit_path=args.fit_file,
                          progress=not args.json)
    if args.plot:
        plot_results(report, args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whitevec", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="evaluate encoders").add_subparsers(dest="eval_command", required=True)
    sts = ev.add_parser("sts", help="Spearman of cosine vs gold score on sentence1<TAB>sentence2<TAB>score lines")
    sts.add_argument("file")
    _add_model_args(sts)
    sts.add_argument("--beta", type=float, nargs="+", default=[1.0], help="mean-removal weights (default 1)")
    sts.add_argument("--gamma", type=float, nargs="+", default=[1.0], help="variance-equalisation weights (default 1)")
    sts.add_argument("--dim", type=int, nargs="+", default=None, help="kept dims (default: all)")
    sts.add_argument("--fit-file", default=None, help="fit whitening on this file's sentences instead of FILE's")
    sts.add_argument("--json", action="store_true", help="print exactly one JSON object")
    sts.add_argument("--plot", default=None, metavar="OUT.png", help="draw Spearman against dim")
    sts.set_defaults(func=cmd_eval_sts)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except WhitevecError as exc:
        print(f"whitevec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
