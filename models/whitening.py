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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import WhiteningError, WhiteningMismatchError
from .files import write_atomic
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
        self._mu32 = self.mu.astype(np.float32)
        self._kernels: dict[float, np.ndarray] = {}  # γ → full d×d float32 kernel; dims are column slices
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
        chunk: int = 65_536,
    ) -> "Whitening":
        """μ and U Λ Uᵀ = SVD(cov) in float64; degenerate directions are floored (EIGEN_FLOOR).

        Streams: Σx and Σxxᵀ accumulate in float64 over `chunk` rows at a time (shifted by the first
        chunk's mean, so a large common component costs no precision), so memory is O(chunk·d + d²)
        beyond `vectors` itself, which may be a memory-mapped raw.npy."""
        vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] < 2:
            raise WhiteningError(f"whitening needs at least 2 vectors of shape (n, d), got shape {vectors.shape}")
        n, d = vectors.shape
        if identity is not None and d != identity.dim:
            raise WhiteningMismatchError(f"vectors have {d} dims but {identity.describe()} has {identity.dim}")
        shift = np.zeros(d)
        total, outer = np.zeros(d), np.zeros((d, d))
        for start in range(0, n, chunk):
            x = np.asarray(vectors[start : start + chunk], dtype=np.float64)
            _check_finite(x, "vectors to fit")
            if start == 0:
                shift = x.mean(axis=0)
            x = x - shift  # never in place: x may be the caller's array
            total += x.sum(axis=0)
            outer += x.T @ x
        mean = total / n
        mu = shift + mean
        cov = (outer - n * np.outer(mean, mean)) / (n - 1)
        u, s, _ = np.linalg.svd(cov)
        if not s[0] > 0:
            raise WhiteningError("all vectors are identical: whitening needs a corpus with some variance")
        if n <= d:
            log.info(
                "fitting whitening on %d vectors of %d dims: at most %d directions carry variance "
                "(with gamma > 0 a rebuild serves at most that many dims)", n, d, n - 1,
            )
        return cls(mu, u, s, n_vectors=n, identity=identity, params=params)

    def with_params(self, params: WhiteningParams) -> "Whitening":
        """The same fit served with other defaults (β, γ, dim)."""
        return Whitening(self.mu, self.u, self.lambdas, n_vectors=self.n_vectors, identity=self.identity,
                         params=params, created_at=self.created_at)

    def output_dim(self, dim: int | None) -> int:
        if dim is None:
            return self.d
        if not 1 <= dim <= self.d:
            raise WhiteningError(f"dim {dim} is outside 1..{self.d}, the dims this whitening was fitted with")
        return dim

    def kernel(self, gamma: float, dim: int | None) -> np.ndarray:
        """W = U_k · Λ_k^(−γ/2) as float32 (d×k): computed once per γ in float64 for all d columns;
        a smaller dim is a view of the first k columns, so a dim sweep holds one matrix."""
        k = self.output_dim(dim)
        key = float(gamma)
        if key not in self._kernels:
            lam = np.maximum(self.lambdas, self.floor)
            self._kernels[key] = (self.u * lam ** (-gamma / 2.0)).astype(np.float32)
        return self._kernels[key][:, :k]

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
        params = WhiteningParams(p.beta if beta is None else beta, p.gamma if gamma is None else gamma,
                                 p.dim if dim is None else dim)
        w = self.kernel(params.gamma, params.dim)
        # (x − βμ)·W, not x·W − βμ·W: subtracting first keeps float32 error at the scale of
        # x − μ instead of |μ|·‖W‖ (7× smaller for |μ| ≈ 43).
        centred = x - np.float32(params.beta) * self._mu32 if params.beta else x
        return centred @ w

    def effective_dim(self, gamma: float, dim: int | None) -> tuple[int, str | None]:
        """The dim to serve, and why it was lowered: with γ > 0, axes past the fitted rank have
        floored eigenvalues that would scale unseen query components ~1000×, so dim ≤ rank."""
        k = self.output_dim(dim)
        if gamma > 0 and k > self.rank:
            return self.rank, (f"whitening dim lowered from {k} to {self.rank}: only {self.rank} directions carry "
                               f"variance in the {self.n_vectors} fitted vectors, and gamma {gamma:g} > 0 would "
                               "amplify the rest; add documents or set gamma to 0 to keep more dims")
        return k, None

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
        write_atomic(path, buf.getvalue())
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
