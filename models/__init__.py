"""Encoders, tokenizers, pooling, whitening and training: text → sentence vectors.

The names below load on first use (PEP 562): importing `whitevec.models.errors` for a command that runs no
model (`whitevec token`, `whitevec collections`) must not pull torch and transformers in (seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import offline as _offline  # noqa: F401  (offline, no telemetry, before transformers or onnxruntime loads)

_WHERE = {
    "EncodeResult": "encoder", "Encoder": "encoder", "ModelFolderError": "errors", "WhitevecError": "errors",
    "WhiteningError": "errors", "WhiteningMismatchError": "errors", "ModelIdentity": "loader",
    "Pipeline": "pipeline", "l2_normalize": "pipeline", "POOLINGS": "pooling", "Pooling": "pooling",
    "TOKENIZERS": "tokenizers", "TextTokenizer": "tokenizers", "Whitening": "whitening",
    "WhiteningParams": "whitening", "jl_dim": "whitening",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
