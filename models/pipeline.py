"""Encoder → whitening → normalisation: the full path from text to a served vector."""

from __future__ import annotations

import numpy as np

from .encoder import Encoder
from .errors import DimNotServed, WhiteningError
from .whitening import Whitening


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Unit rows (zero rows stay zero), so inner product is cosine."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Pipeline:
    """An encoder with the whitening fitted for it; refuses a fit made for another model."""

    def __init__(self, encoder: Encoder, whitening: Whitening | None = None) -> None:
        if whitening is not None:
            whitening.check_compatible(encoder.identity)
        self.encoder = encoder
        self.whitening = whitening

    def output_dim(self, whiten: bool = True, dim: int | None = None, field: str = "dim") -> int:
        """The dims an answer will have; WhiteningError/DimNotServed naming `field` (the request's name for
        `dim`: /v1 calls it `dimensions`) when it cannot be given."""
        if not whiten and dim is not None:
            raise WhiteningError(f"{field} {dim} keeps the first whitened axes, so it needs whiten: true; "
                                 "with whiten: false omit dim (raw vectors have all their dims)", param=field)
        if whiten and self.whitening is not None:
            served = self.whitening.output_dim(self.whitening.params.dim)
            if dim is not None and dim > served:
                raise DimNotServed(f"{field} {dim} is above the {served} dims this version's whitening serves; "
                                   "ask for fewer, or rebuild with a larger whitening dim", param=field)
            return served if dim is None else dim
        if dim is not None:
            raise DimNotServed(f"{field} {dim} needs a fitted whitening; none is loaded yet (build an index first), "
                               f"or omit {field}", param=field)
        return self.encoder.dim

    def postprocess(self, vectors: np.ndarray, whiten: bool = True, dim: int | None = None,
                    normalize: bool = True) -> np.ndarray:
        self.output_dim(whiten, dim)  # validate before any work
        if whiten and self.whitening is not None:
            vectors = self.whitening.transform(vectors, dim=dim)
        return l2_normalize(vectors) if normalize else vectors
