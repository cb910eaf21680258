"""What every `whitevec` command shares: the model flags, and Settings from WHITEVEC_* plus the flags given."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    from whitevec.models.choices import POOLINGS, TOKENIZERS  # not pooling/tokenizers: they load torch
    from whitevec.models.engines import ENGINES

    p.add_argument("--model", default=None, help="local Hugging Face model folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="default: the folder's sentence-transformers pooling, else first-last-avg")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default=None, help="bert (default) or wobert (jieba words)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per text; longer texts are truncated and counted")
    p.add_argument("--batch-size", type=int, default=None, help="texts per model batch (default: the engine's, 64 for torch-half, else 32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--engine", choices=("auto", *ENGINES), default=None,
                   help="inference engine (default auto: torch-half (bf16) on a GPU, openvino-bf16 on a CPU with "
                        "AMX-BF16, openvino-mixed (first layer fp32, the rest bf16) on a CPU with AVX-512 BF16 but no "
                        "AMX, onnx on other CPUs; /readyz says why; onnx: ONNX Runtime fp32, torch's vectors; onnx-int8-rr: int8, fastest on VNNI "
                        "CPUs, vectors further from fp32; see WHITEVEC_ENGINE)")


def build_encoder(args: argparse.Namespace):
    from whitevec.models.encoder import EncoderSpec

    return EncoderSpec(args.model, args.pooling, args.tokenizer, args.max_length, args.engine or "auto",
                       args.device, args.batch_size).build()


def settings_from(args: argparse.Namespace, **extra):
    """Settings from WHITEVEC_* variables, overridden by the flags that were given."""
    from whitevec.service.engine.settings import Settings

    flags = {"data_dir": args.data_dir, "model_dir": args.model, "pooling": args.pooling,
             "tokenizer": args.tokenizer, "max_length": args.max_length, "device": args.device,
             "max_batch": args.batch_size, "engine": getattr(args, "engine", None), **extra}
    return Settings(**{k: v for k, v in flags.items() if v is not None})
