import numpy as np
import pytest

from whitevec.models.errors import WhiteningError, WhiteningMismatchError
from whitevec.models.loader import ModelIdentity
from whitevec.models.pipeline import Pipeline
from whitevec.models.whitening import Whitening, WhiteningParams, jl_dim

IDENTITY = ModelIdentity(name="m", fingerprint="abc", pooling="cls", dim=16)


def anisotropic(n: int = 500, d: int = 16, seed: int = 0) -> np.ndarray:
    """Vectors with a common offset and very unequal variances, like raw BERT outputs."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(5.0, 0.05, d)
    mixing = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * scales) @ mixing + rng.normal(size=d) * 3


def reference(x, beta, gamma, k):
    """The formula, straight, in float64: (x − βμ) · U_k · Λ_k^(−γ/2)."""
    x = x.astype(np.float64)
    mu = x.mean(axis=0)
    u, s, _ = np.linalg.svd(np.cov(x.T))
    return (x - beta * mu) @ u[:, :k] @ np.diag(s[:k] ** (-gamma / 2))


def cosines(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


@pytest.mark.parametrize("beta,gamma,k", [(1, 1, 16), (1, 1, 4), (0, 0, 16), (0.5, 0.5, 8), (0, 1, 3), (1, 0, 10)])
def test_transform_matches_float64_reference(beta, gamma, k):
    x = anisotropic()
    w = Whitening.fit(x)
    got = w.transform(x, beta, gamma, k)
    want = reference(x, beta, gamma, k)
    # Eigenvector signs are arbitrary: compare column by column up to sign.
    signs = np.sign((got * want).sum(axis=0))
    np.testing.assert_allclose(got * signs, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_full_whitening_gives_identity_covariance_on_fit_data():
    x = anisotropic()
    y = Whitening.fit(x).transform(x, 1, 1, None)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T), np.eye(16), atol=1e-3)


def test_rotation_only_preserves_cosines():
    x = anisotropic()
    y = Whitening.fit(x).transform(x, 0, 0, 16)
    np.testing.assert_allclose(cosines(y), cosines(x), atol=1e-5)


def test_rotation_truncation_keeps_top_variance():
    x = anisotropic()
    y = Whitening.fit(x).transform(x, 0, 0, 4)
    variances = y.var(axis=0)
    assert list(variances) == sorted(variances, reverse=True)


def test_default_params_apply_and_roundtrip(tmp_path):
    x = anisotropic()
    w = Whitening.fit(x, identity=IDENTITY, params=WhiteningParams(0.5, 0.5, 8))
    path = w.save(tmp_path / "whitening.npz")
    back = Whitening.load(path)
    assert back.version == w.version
    assert back.identity == IDENTITY
    assert back.params == WhiteningParams(0.5, 0.5, 8)
    assert back.n_vectors == 500
    assert back.transform(x).shape == (500, 8)
    np.testing.assert_array_equal(back.transform(x), w.transform(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_version_identifies_the_fit():
    assert Whitening.fit(anisotropic()).version == Whitening.fit(anisotropic()).version
    assert Whitening.fit(anisotropic()).version != Whitening.fit(anisotropic(seed=1)).version


def test_refuses_other_model_pooling_or_dim():
    w = Whitening.fit(anisotropic(), identity=IDENTITY)
    w.check_compatible(IDENTITY)
    for other in (
        ModelIdentity("m", "zzz", "cls", 16),
        ModelIdentity("m", "abc", "last-avg", 16),
        ModelIdentity("m", "abc", "cls", 32),
    ):
        with pytest.raises(WhiteningMismatchError):
            w.check_compatible(other)
    with pytest.raises(WhiteningMismatchError, match="16 dims"):
        w.transform(np.ones((2, 32)))


def test_pipeline_refuses_a_fit_for_another_model(tiny_encoder):
    w = Whitening.fit(anisotropic(d=tiny_encoder.dim), identity=ModelIdentity("x", "other", "cls", tiny_encoder.dim))
    with pytest.raises(WhiteningMismatchError, match="refit"):
        Pipeline(tiny_encoder, w)


def test_fewer_vectors_than_dims_stays_finite():
    x = anisotropic(n=5)
    w = Whitening.fit(x)
    assert w.rank <= 4
    y = w.transform(x, 1, 1, None)
    assert np.isfinite(y).all()


def test_zero_variance_direction_stays_finite():
    x = anisotropic()
    x[:, 3] = 7.0
    y = Whitening.fit(x).transform(x, 1, 1, None)
    assert np.isfinite(y).all()
    y0 = Whitening.fit(x).transform(x, 0, 1, None)
    assert np.isfinite(y0).all()


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_input_is_an_error(bad):
    x = anisotropic()
    x[10, 2] = float(bad)
    with pytest.raises(WhiteningError, match="rows \\[10\\]"):
        Whitening.fit(x)
    with pytest.raises(WhiteningError, match="NaN or inf"):
        Whitening.fit(anisotropic()).transform(x)


def test_degenerate_corpora_are_errors():
    with pytest.raises(WhiteningError, match="at least 2"):
        Whitening.fit(np.ones((1, 4)))
    with pytest.raises(WhiteningError, match="identical"):
        Whitening.fit(np.ones((10, 4)))


def test_parameter_validation():
    w = Whitening.fit(anisotropic())
    with pytest.raises(WhiteningError, match="dim 17"):
        w.transform(anisotropic(), dim=17)
    with pytest.raises(WhiteningError, match="beta"):
        w.transform(anisotropic(), beta=2.0)
    with pytest.raises(WhiteningError, match="dim 20"):
        Whitening.fit(anisotropic(), params=WhiteningParams(dim=20))


def test_jl_estimate():
    assert jl_dim(3000) == 67  # 8.33 · ln 3000 = 66.7
    assert jl_dim(10) == 20


def test_subtracting_the_mean_first_keeps_float32_error_small():
    """(x − βμ)·W in float32 against the float64 formula, at |μ| ≈ 43 as for raw BERT vectors."""
    rng = np.random.default_rng(3)
    d = 64
    offset = rng.normal(size=d)
    offset *= 43 / np.linalg.norm(offset)
    x = rng.normal(size=(400, d)) * np.geomspace(1.0, 0.01, d) + offset
    fit = Whitening.fit(x)
    want = (x - fit.mu) @ fit.u @ np.diag(fit.lambdas ** -0.5)
    got = fit.transform(x, 1, 1, None)
    naive = x.astype(np.float32) @ fit.kernel(1, None) - (fit.mu @ fit.kernel(1, None).astype(np.float64)).astype(np.float32)
    err, naive_err = np.abs(got - want).max(), np.abs(naive - want).max()
    assert err * 2 < naive_err, (err, naive_err)


def test_one_kernel_per_gamma_serves_every_dim():
    fit = Whitening.fit(anisotropic())
    for k in range(1, 17):
        for beta in (0, 0.5, 1):
            fit.transform(anisotropic(10), beta, 1, k)
    assert len(fit._kernels) == 1
    full = fit.kernel(1, None)
    assert fit.kernel(1, 5).base is full or np.shares_memory(fit.kernel(1, 5), full)


def test_dim_is_capped_at_the_rank_when_gamma_is_positive():
    x = anisotropic(n=10, d=16)  # at most 9 directions carry variance
    fit = Whitening.fit(x)
    assert fit.rank == 9
    dim, why = fit.effective_dim(1.0, 16)
    assert dim == 9 and "lowered from 16 to 9" in why
    assert fit.effective_dim(0.0, 16) == (16, None)  # a rotation amplifies nothing
    assert fit.effective_dim(1.0, 5) == (5, None)


def test_dim_without_whitening_says_whiten_is_needed():
    class _Enc:
        dim = 16
        identity = IDENTITY

    pipe = Pipeline(_Enc(), Whitening.fit(anisotropic(), identity=IDENTITY))
    with pytest.raises(WhiteningError, match="needs whiten: true"):
        pipe.output_dim(False, 8)


def test_streamed_fit_equals_numpy_float64_on_the_whole_matrix():
    """Chunks of 7 rows, a common component 1000× the spread: μ and cov equal numpy's one-shot float64."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(50, 6)) * 0.01 + 10.0).astype(np.float32)
    w = Whitening.fit(x, chunk=7)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(w.mu, ref.mean(axis=0), rtol=1e-12)
    cov = (w.u * w.lambdas) @ w.u.T
    np.testing.assert_allclose(cov, np.cov(ref, rowvar=False), atol=1e-14, rtol=1e-9)
