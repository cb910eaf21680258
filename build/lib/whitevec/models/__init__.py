"""Encoders, tokenizers, pooling, whitening and training: text → sentence vectors."""

from . import loader as _loader  # noqa: F401  (sets offline mode before transformers loads)
from .encoder import EncodeResult, Encoder
from .errors import ModelFolderError, WhitevecError, WhiteningError, WhiteningMismatchError
from .loader import ModelIdentity
from .pipeline import Pipeline, l2_normalize
from .pooling import POOLINGS, Pooling
from .tokenizers import TOKENIZERS, TextTokenizer
from .whitening import Whitening, WhiteningParams, jl_dim

__all__ = [
    "POOLINGS", "TOKENIZERS", "EncodeResult", "Encoder", "ModelFolderError", "ModelIdentity", "Pipeline",
    "Pooling", "TextTokenizer", "Whitening", "WhiteningError", "WhiteningMismatchError", "WhiteningParams",
    "WhitevecError", "jl_dim", "l2_normalize",
]
