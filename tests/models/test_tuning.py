"""Auto whitening: the grid against a direct computation, the honest split, the smallest-dim rule."""

import numpy as np
import pytest

from whitevec.models.errors import WhiteningError
from whitevec.models.evaluation import cosine_spearman
from whitevec.models.tuning import dim_ladder, split, tune
from whitevec.models.whitening import Whitening, jl_dim


def synthetic(n_pairs: int = 400, d: int = 32, seed: int = 0):
    """Pairs whose gold score follows their similarity in a few directions, under a large common mean and
    anisotropic noise: the setting whitening is for."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(5, 0.2, d)
    base = rng.normal(size=(n_pairs, d)) * scale + 30
    noise = rng.normal(size=(n_pairs, d)) * scale * rng.uniform(0.1, 1.5, size=(n_pairs, 1))
    a, b = base, base + noise
    scores = -np.linalg.norm(noise[:, -8:], axis=1) + rng.normal(scale=0.1, size=n_pairs)
    corpus = rng.normal(size=(2000, d)) * scale + 30
    return Whitening.fit(corpus), a.astype(np.float32), b.astype(np.float32), scores


def test_the_dim_ladder_halves_down_to_the_jl_estimate():
    assert jl_dim(10_000) == 77
    assert dim_ladder(384, 10_000) == [384, 288, 192, 96, 77]
    assert dim_ladder(384, 10_000, max_dim=256) == [256, 192, 128, 77]
    assert dim_ladder(32, 10_000) == [32]  # the estimate is above d: d alone


def test_the_split_is_disjoint_and_seeded():
    choose, report = split(101, seed=3)
    assert len(choose) + len(report) == 101 and not set(choose) & set(report)
    assert (split(101, seed=3)[0] == choose).all() and not (split(101, seed=4)[0] == choose).all()


def test_every_cell_equals_a_direct_computation():
    fit, a, b, scores = synthetic()
    result = tune(fit, a, b, scores)
    choose, report = split(len(scores), 0)
    cells = [r for r in result["table"] if not r["raw"]]
    assert len(cells) == 25 * len(result["dims"])
    for row in cells[::7]:
        ta = fit.transform(a, row["beta"], row["gamma"], row["dim"]).astype(np.float64)
        tb = fit.transform(b, row["beta"], row["gamma"], row["dim"]).astype(np.float64)
        assert row["choose"] == pytest.approx(cosine_spearman(ta[choose], tb[choose], scores[choose]), abs=1e-3)
        assert row["report"] == pytest.approx(cosine_spearman(ta[report], tb[report], scores[report]), abs=1e-3)
    raw = result["table"][0]
    assert raw["raw"] and raw["report"] == pytest.approx(cosine_spearman(a[report], b[report], scores[report]), abs=1e-3)


def test_the_choice_never_looks_at_the_reported_half():
    fit, a, b, scores = synthetic()
    choose, report = split(len(scores), 0)
    first = tune(fit, a, b, scores)
    scrambled = scores.copy()
    scrambled[report] = np.random.default_rng(9).permutation(scores[report])  # the reported half is now noise
    second = tune(fit, a, b, scrambled)
    assert second["choice"] == first["choice"] and second["reason"] == first["reason"]
    assert abs(second["held_out"]["chosen"]) < 20 < first["held_out"]["chosen"]


def test_the_smallest_dim_within_the_tolerance_wins():
    fit, a, b, scores = synthetic()
    strict = tune(fit, a, b, scores, tolerance=0.0)
    best = max(strict["table"], key=lambda r: r["choose"])
    assert (strict["choice"]["dim"], strict["choice"]["beta"], strict["choice"]["gamma"]) == \
        (best["dim"], best["beta"], best["gamma"])
    loose = tune(fit, a, b, scores, tolerance=1000.0)  # everything is near: the smallest dim there is
    assert loose["choice"]["dim"] == min(r["dim"] for r in loose["table"])
    # and at that dim no variance equalisation, the best of the γ = 0 cells there
    plain = [r for r in loose["table"] if r["dim"] == loose["choice"]["dim"] and r["gamma"] == 0]
    assert loose["choice"] == {k: max(plain, key=lambda r: r["choose"])[k] for k in ("beta", "gamma", "dim")}
    assert "γ = 0 preferred" in loose["reason"]
    middle = tune(fit, a, b, scores, tolerance=2.0)
    near = [r for r in middle["table"] if r["choose"] >= best["choose"] - 2.0]
    assert middle["choice"]["dim"] == min(r["dim"] for r in near)
    assert "smallest dim within 2" in middle["reason"]


def test_too_few_pairs_are_refused():
    fit, a, b, scores = synthetic(n_pairs=10)
    with pytest.raises(WhiteningError, match="at least 20 labelled pairs"):
        tune(fit, a, b, scores)


def test_anisotropy_and_the_unlabelled_suggestion():
    from whitevec.models.tuning import anisotropy, suggestion

    rng = np.random.default_rng(0)
    isotropic = rng.normal(size=(3000, 64))
    assert abs(anisotropy(isotropic)) < 0.02
    assert anisotropy(isotropic + 3.0) > 0.8  # a large common component: every pair looks alike
    assert suggestion(anisotropy(isotropic))["gamma"] == 0.0
    hint = suggestion(anisotropy(isotropic + 3.0))
    assert (hint["beta"], hint["gamma"]) == (1.0, 1.0) and "auto whitening" in hint["why"]


def test_the_choice_is_said_as_what_it_does():
    from whitevec.models.tuning import describe

    assert describe(1.0, 0.0, 384, 384) == "centre, rotate and keep all 384 dims, no variance equalisation"
    assert describe(0.0, 0.0, 128, 384) == "rotate and truncate to 128 of 384 dims, no variance equalisation"
    assert describe(0.5, 0.0, 64, 384).startswith("centre by 0.5 of the mean, rotate and truncate to 64")
    assert describe(1.0, 1.0, 256, 384) == ("whiten (centre, rotate, equalise every direction's variance, truncate to "
                                            "256 of 384 dims)")


def test_every_line_of_the_tuning_plot_looks_different():
    from whitevec.models.evaluation import line_looks
    from whitevec.models.tuning import GRID

    keys = [(b, g) for b in GRID for g in GRID]
    looks = line_looks(keys)
    assert len(keys) == 25 and len(set(looks.values())) == len(keys)
