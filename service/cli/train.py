"""`whitevec train`: AM-Softmax fine-tuning in the shell (what POST /admin/train runs, without a server)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from whitevec.index.datadir import TRAIN, DataDirLock
from whitevec.models.errors import WhitevecError

from .common import add_model_args, settings_from


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="AM-Softmax fine-tuning (the same as POST /admin/train, in the shell)")
    tr.add_argument("file", help="TSV pairs (sentence1<TAB>sentence2<TAB>score), or JSONL of "
                    "{\"text\", \"label\"} examples or {\"text_a\", \"text_b\", \"score\"} pairs")
    tr.add_argument("--pair-threshold", type=float, default=4.0, help="pairs scoring ≥ this are one class")
    tr.add_argument("--data-dir", default=None, help="where the model is written and, with --activate, "
                    "served from (default ./data, or WHITEVEC_DATA_DIR)")
    tr.add_argument("--collection", default="default", help="start from this collection's model; --activate "
                    "re-encodes this collection only")
    add_model_args(tr)
    tr.add_argument("--out", default=None, help="output model folder (default DATA_DIR/models/NAME-ft-TIME-XXXX: "
                    "NAME is the base model's, TIME the UTC start)")
    tr.add_argument("--epochs", type=int, default=3, help="passes over the training data (default 3)")
    tr.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate")
    tr.add_argument("--centre-lr", type=float, default=1e-2, help="class-centre learning rate")
    tr.add_argument("--warmup", type=float, default=0.1, help="fraction of steps warming up")
    tr.add_argument("--grad-accum", type=int, default=1, help="batches whose gradients are summed per optimiser step (default 1)")
    tr.add_argument("--train-max-length", type=int, default=64, help="tokens per sentence while training")
    tr.add_argument("--seed", type=int, default=0, help="random seed for batches and class centres (default 0)")
    tr.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps (default: all epochs)")
    tr.add_argument("--scale", type=float, default=30.0, help="AM-Softmax scale s on the cosine logits (default 30)")
    tr.add_argument("--margin", type=float, default=0.35, help="AM-Softmax margin m subtracted from the true class cosine (default 0.35)")
    tr.add_argument("--eval-pairs", default=None, help="pairs file: Spearman before and after")
    tr.add_argument("--activate", action="store_true",
                    help="re-encode the data dir's corpus with the new model and serve it as a new version")
    tr.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise WhitevecError(f"{path} is not a file; give a TSV of pairs or a JSONL of examples or pairs")
    settings = settings_from(args)
    if args.activate:
        DataDirLock.check_free(settings.data_dir, *TRAIN)  # at once, before torch loads

    from whitevec.service.engine.runtime import Runtime

    rt = Runtime(settings)
    if args.activate:  # before the long part: refuse now if a server uses the data dir
        rt.lock(*TRAIN)
        rt.open()
        if rt.collection(args.collection) is None:
            rt.unlock()
            raise WhitevecError(f"no collection named {args.collection!r} in {rt.settings.data_dir}")
    try:
        return _train(rt, args, path)
    finally:
        rt.unlock()


def _train(rt, args: argparse.Namespace, path: Path) -> int:
    from dataclasses import asdict

    from whitevec.models.training import (
        TrainConfig,
        classes_from_examples,
        classes_from_pairs,
        read_training_file,
        train,
    )

    config = TrainConfig(scale=args.scale, margin=args.margin, epochs=args.epochs, batch_size=args.batch_size or 32,
                         lr=args.lr, centre_lr=args.centre_lr, warmup=args.warmup, grad_accum=args.grad_accum,
                         max_length=args.train_max_length, seed=args.seed, max_steps=args.max_steps)
    examples, pairs = read_training_file(path)
    data = classes_from_examples(examples) if examples is not None else classes_from_pairs(pairs, args.pair_threshold)
    print(f"{data.n_classes} classes, {len(data.texts)} sentences ({data.dropped} alone in their class, dropped)",
          file=sys.stderr)
    # the served model (the active version's, else the configured or bundled one), read-only
    encoder = rt.settings.encoder_spec(engine="torch").build() if args.model is not None else _served_encoder(rt, args.collection)
    out = Path(args.out) if args.out else rt.training.model_output_dir(None, base=encoder.identity.name)
    report = train(encoder, data, config, out, Path(args.eval_pairs) if args.eval_pairs else None, progress=True)
    summary = {k: v for k, v in report.items() if k != "loss"}
    summary["model_dir"] = str(out)
    summary["settings"] = asdict(config)
    if args.activate:
        rt.load()
        col = rt.collection(args.collection)
        if col is None:
            raise WhitevecError(f"no collection named {args.collection!r} in {rt.settings.data_dir}; the model was "
                                f"written to {out}: create the collection and activate it there")
        summary["activation"] = rt.training.activate_model(None, col, out)
    print(json.dumps(summary, indent=2))
    return 0


def _served_encoder(rt, name: str):
    """The model collection `name` serves, read-only (a server may be running): float32 torch, for training."""
    from whitevec.index import layout
    from whitevec.index.bundle import resolve_model_ref
    from whitevec.index.versions import VersionStore
    from whitevec.models.encoder import EncoderSpec

    data_root = rt.settings.data_root
    old = name == layout.DEFAULT and (data_root / "versions").is_dir()  # not upgraded yet: no server since
    folder = data_root if old else layout.folder(data_root, name)
    if not (folder / "versions").is_dir():
        if name != layout.DEFAULT:
            raise WhitevecError(f"no collection named {name!r} in {data_root}")
        return rt.settings.encoder_spec(engine="torch").build()
    config = {} if old else layout.read_config(data_root, name)
    store = VersionStore(folder)
    active = store.active()
    if active is None:
        return rt.settings.encoder_spec(layout.model_folder(data_root, config.get("model")), engine="torch").build()
    model = store.model_section(active, store.verify_files(active))
    path = str(resolve_model_ref(model, store.models_root))
    return EncoderSpec.from_manifest({**model, "path": path, "engine": "torch"}, device=rt.settings.device).build()
