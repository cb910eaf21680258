"""Whitening as a fitted, saved transform: x' = (x − βμ) · U_k · Λ_k^(−γ/2).

One fit (μ and the SVD of the covariance, in float64) serves every
(β, γ, k ≤ d). β = γ = 1 is BERT-whitening (Su et al., 2021); β = γ = 0 is a
pure rotation onto the principal axes plus truncation, which shrinks vectors of
models already trained for similarity without losing their geometry.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import WhiteningError, WhiteningMismatchError
from .loader import ModelIdentity

log = logging.getLogger(__name__)

#: Eigenvalues are floored at this fraction of the largest one, so directions
#: with (near) zero variance get a large but finite scale instead of inf/NaN.
EIGEN_FLOOR = 1e-6
FORMAT = "whitevec-whitening/1"


def jl_dim(n_points: int) -> int:
    """Johnson–Lindenstrauss guidance: dims that keep N points' distances, n > 8.33·ln N."""
    return math.ceil(8.33 * math.log(max(n_points, 2)))


@dataclass(frozen=True)
class WhiteningParams:
    """How a fit is applied: β scales the mean removed, γ the variance equalised, dim the kept axes."""

    beta: float = 1.0
    gamma: float = 1.0
    dim: int | None = None  # None: every fitted dimension

    def __post_init__(self) -> None:
        for name in ("beta", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise WhiteningError(f"{name} must be a number between 0 and 1, got {value!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise WhiteningError(f"dim must be a positive integer or null, got {self.dim!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise WhiteningError(f"{what} contain NaN or inf (rows {rows}…); fix the input vectors")


class Whitening:
    """A fitted whitening transform and the identity of the vectors it was fitted on."""

    def __init__(
        self,
        mu: np.ndarray,
        u: np.ndarray,
        lambdas: np.ndarray,
        *,
        n_vectors: int,
        identity: ModelIdentity | None = None,
        params: WhiteningParams = WhiteningParams(),
        created_at: float | None = None,
    ) -> None:
        self.mu = np.asarray(mu, dtype=np.float64)
        self.u = np.asarray(u, dtype=np.float64)
        self.lambdas = np.asarray(lambdas, dtype=np.float64)
        self.n_vectors = int(n_vectors)
        self.identity = identity
        self.params = params
        self.created_at = time.time() if created_at is None else created_at
        self.floor = float(self.lambdas[0] * EIGEN_FLOOR)
        self.rank = int((self.lambdas > self.floor).sum())
        digest = hashlib.sha256()
        for array in (self.mu, self.u, self.lambdas):
            digest.update(np.ascontiguousarray(array).tobytes())
        self.version = digest.hexdigest()[:12]
        self._kernels: dict[tuple[float, float, int], tuple[np.ndarray, np.ndarray]] = {}
        self.output_dim(params.dim)  # validates the default dim against d

    @property
    def d(self) -> int:
        return self.mu.shape[0]

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        identity: ModelIdentity | None = None,
        params: WhiteningParams = WhiteningParams(),
    ) -> "Whitening":
        """μ and U Λ Uᵀ = SVD(cov) in float64; degenerate directions are floored (EIGEN_FLOOR)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise WhiteningError(f"whitening needs at least 2 vectors of shape (n, d), got shape {x.shape}")
        if identity is not None and x.shape[1] != identity.dim:
            raise WhiteningMismatchError(f"vectors have {x.shape[1]} dims but {identity.describe()} has {identity.dim}")
        _check_finite(x, "vectors to fit")
        mu = x.mean(axis=0)
        cov = np.cov(x, rowvar=False)
        u, s, _ = np.linalg.svd(cov)
        if not s[0] > 0:
            raise WhiteningError("all vectors are identical: whitening needs a corpus with some variance")
        if x.shape[0] <= x.shape[1]:
            log.warning(
                "fitting whitening on %d vectors of %d dims: at most %d directions carry variance; "
                "keep dim ≤ %d", x.shape[0], x.shape[1], x.shape[0] - 1, x.shape[0] - 1,
            )
        return cls(mu, u, s, n_vectors=x.shape[0], identity=identity, params=params)

    def output_dim(self, dim: int | None) -> int:
        if dim is None:
            return self.d
        if not 1 <= dim <= self.d:
            raise WhiteningError(f"dim {dim} is outside 1..{self.d}, the dims this whitening was fitted with")
        return dim

    def kernel(self, beta: float, gamma: float, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
        """W (d×k) and bias (k) with x' = x·W − bias, computed in float64, cached as float32."""
        WhiteningParams(beta, gamma, dim)
        k = self.output_dim(dim)
        key = (float(beta), float(gamma), k)
        if key not in self._kernels:
            lam = np.maximum(self.lambdas[:k], self.floor)
            w = self.u[:, :k] * lam ** (-gamma / 2.0)
            bias = beta * self.mu @ w
            self._kernels[key] = (w.astype(np.float32), bias.astype(np.float32))
        return self._kernels[key]

    def transform(
        self,
        x: np.ndarray,
        beta: float | None = None,
        gamma: float | None = None,
        dim: int | None = None,
    ) -> np.ndarray:
        """Apply the fit; None for any parameter takes the saved default."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise WhiteningMismatchError(f"vectors have shape {x.shape} but this whitening was fitted on {self.d} dims")
        _check_finite(x, "vectors to whiten")
        p = self.params
        w, bias = self.kernel(
            p.beta if beta is None else beta,
            p.gamma if gamma is None else gamma,
            p.dim if dim is None else dim,
        )
        return x @ w - bias

    def check_compatible(self, identity: ModelIdentity) -> None:
        """Refuse vectors of any other model, pooling or dimension than the fit's."""
        if identity.dim != self.d:
            raise WhiteningMismatchError(
                f"whitening {self.version} was fitted on {self.d}-dim vectors; {identity.describe()} has {identity.dim}"
            )
        mine = self.identity
        if mine is not None and (mine.fingerprint, mine.pooling) != (identity.fingerprint, identity.pooling):
            raise WhiteningMismatchError(
                f"whitening {self.version} was fitted for {mine.describe()}, not {identity.describe()}: "
                "refit it on this model's vectors"
            )

    def meta(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.version,
            "identity": self.identity.to_dict() if self.identity else None,
            "params": self.params.to_dict(),
            "n_vectors": self.n_vectors,
            "d": self.d,
            "rank": self.rank,
            "eigen_floor": EIGEN_FLOOR,
            "jl_dim": jl_dim(self.n_vectors),
            "created_at": self.created_at,
        }

    def save(self, path: str | Path) -> Path:
        """One .npz file, written to a temp name, fsynced and renamed: a crash leaves the old file."""
        path = Path(path)
        buf = io.BytesIO()
        np.savez(buf, mu=self.mu, u=self.u, lambdas=self.lambdas, meta=np.array(json.dumps(self.meta())))
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Whitening":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                mu, u, lambdas = data["mu"], data["u"], data["lambdas"]
        except (OSError, KeyError, ValueError) as exc:
            raise WhiteningError(f"whitening file {path} is not readable: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise WhiteningError(f"whitening file {path} has format {meta.get('format')!r}, expected {FORMAT}")
        identity = ModelIdentity.from_dict(meta["identity"]) if meta["identity"] else None
        return cls(mu, u, lambdas, n_vectors=meta["n_vectors"], identity=identity,
                   params=WhiteningParams(**meta["params"]), created_at=meta["created_at"])
