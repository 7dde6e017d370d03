"""Self-tests of miqa_checks.stats: distribution helpers against scipy, bootstrap coverage, decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miqa_checks import properties as P
from miqa_checks import stats


# --------------------------------------------------------------------------- distributions


@pytest.mark.parametrize("df", [1, 4, 11, 63, 500])
def test_t_functions_match_scipy(df):
    for x in (-3.1, -0.5, 0.0, 0.7, 2.5):
        assert stats.t_cdf(x, df) == pytest.approx(ss.t.cdf(x, df), rel=1e-10, abs=1e-14)
        assert stats.t_sf(x, df) == pytest.approx(ss.t.sf(x, df), rel=1e-10, abs=1e-14)
    for p in (0.9, 0.95, 0.975, 0.999):
        assert stats.t_ppf(p, df) == pytest.approx(ss.t.ppf(p, df), rel=1e-9)
    assert stats.z_ppf(0.975) == pytest.approx(1.959963984540054)


def test_bonferroni():
    assert stats.bonferroni(0.01, 10) == pytest.approx(0.1)
    assert stats.bonferroni(0.2, 10) == 1.0
    assert stats.bonferroni(0.03, 0) == pytest.approx(0.03)  # family of at least one
    assert math.isnan(stats.bonferroni(float("nan"), 3))


def test_fisher_z_known_values():
    assert stats.fisher_z(0.5) == pytest.approx(0.5493061443340549)
    assert stats.fisher_z(0.0) == 0.0
    assert stats.fisher_z(-0.8) == pytest.approx(-1.0986122886681098)
    assert np.isfinite(stats.fisher_z(1.0))
    lo, hi = stats.fisher_ci(0.5, 28)  # se = 1/5
    assert lo == pytest.approx(math.tanh(0.5493061443340549 - 1.959963984540054 / 5))
    assert hi == pytest.approx(math.tanh(0.5493061443340549 + 1.959963984540054 / 5))
    assert all(math.isnan(v) for v in stats.fisher_ci(0.5, 3))


@pytest.mark.parametrize("k,n", [(0, 20), (3, 20), (20, 20), (7, 64), (1, 1)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = ss.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = stats.clopper_pearson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.1), (1, 10, 0.1), (5, 64, 0.05), (64, 64, 0.5), (3, 10, 0.0)])
def test_binom_sf_ge_matches_scipy(k, n, p):
    assert stats.binom_sf_ge(k, n, p) == pytest.approx(ss.binom.sf(k - 1, n, p), abs=1e-12)


# --------------------------------------------------------------------------- estimators


def test_paired_delta_and_influence():
    rng = np.random.default_rng(0)
    r = rng.uniform(2, 4.6, 50)
    c = r * 0.9 + rng.normal(0, 0.1, 50)
    delta, psi = stats.paired_delta(r, c)
    assert delta == pytest.approx((c.mean() - r.mean()) / r.mean() * 100)
    assert abs(psi.mean()) < 1e-10
    # delta-method SE against the bootstrap SD of the same statistic
    se = stats.standard_error(psi)
    m = stats.bootstrap_means(np.stack([r, c], 1), seed=1, resamples=4000)
    boot_sd = np.std((m[:, 1] - m[:, 0]) / m[:, 0] * 100)
    assert se == pytest.approx(boot_sd, rel=0.15)
    # vectorised over conditions
    d2, psi2 = stats.paired_delta(r, np.stack([c, r]))
    assert d2.shape == (2,) and psi2.shape == (2, 50)
    assert d2[0] == pytest.approx(delta) and d2[1] == pytest.approx(0.0)


def test_drop_nan_pairs_counts():
    a = np.array([1.0, np.nan, 3.0, 4.0])
    b = np.array([[1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0]])
    (x, y), dropped = stats.drop_nan_pairs(a, b)
    assert dropped == 2 and x.tolist() == [1.0, 4.0] and y.shape == (2, 2)
    with pytest.raises(ValueError):
        stats.drop_nan_pairs(a, a[:3])


def test_bootstrap_matrices_seeded_cached_readonly():
    a = stats.bootstrap_indices(10, 100, 3)
    assert a.shape == (100, 10) and a.min() >= 0 and a.max() < 10
    assert stats.bootstrap_indices(10, 100, 3) is a
    assert not np.array_equal(a, stats.bootstrap_indices(10, 100, 4))
    with pytest.raises(ValueError):
        a[0, 0] = 1
    w = stats.bootstrap_weights(10, 100, 3)
    assert np.allclose(w.sum(1), 1.0)
    x = np.arange(10.0)
    assert np.allclose(w @ x, x[a].mean(1))


def test_printed_interval_is_the_t_interval_and_covers():
    """The printed CI is the t-based 90 % (TOST) interval of the decision, and covers the true delta."""
    rng = np.random.default_rng(12345)
    true_delta = -10.0  # E[c] = 0.9 E[r]
    reps, n = 400, 40
    t_hits = 0
    for i in range(reps):
        r = rng.normal(3.5, 0.6, n)
        c = 0.9 * r + rng.normal(0.0, 0.25, n)
        v = P.relative_change(r, c, tol_pct=10, seed=i, resamples=1000)
        delta, psi = stats.paired_delta(r, c)
        se = stats.standard_error(psi)
        h = stats.t_ppf(0.95, n - 1) * se
        assert (v.ci_low, v.ci_high) == pytest.approx((delta - h, delta + h))
        t_hits += delta - h <= true_delta <= delta + h
    assert 0.85 <= t_hits / reps <= 0.94


# --------------------------------------------------------------------------- decisions


def test_band_decision_basic_cases():
    common = dict(alpha=0.05, family_size=1, min_images=5)
    assert stats.band_decision(0.0, 1.0, 64, lower=-10, upper=10, **common).outcome == "pass"
    assert stats.band_decision(20.0, 1.0, 64, lower=-10, upper=10, **common).outcome == "fail"
    assert stats.band_decision(-20.0, 1.0, 64, lower=-10, upper=10, **common).outcome == "fail"
    d = stats.band_decision(9.0, 2.0, 64, lower=-10, upper=10, **common)
    assert d.outcome == "inconclusive" and d.n_needed > 64
    # exact (se = 0) estimates decide without a division by zero
    assert stats.band_decision(5.0, 0.0, 10, upper=10, **common).outcome == "pass"
    assert stats.band_decision(15.0, 0.0, 10, upper=10, **common).outcome == "fail"
    # too few images: inconclusive with the n that would decide
    d = stats.band_decision(0.0, 1.0, 3, lower=-10, upper=10, **common)
    assert d.outcome == "inconclusive" and d.n_needed == 5
    # Bonferroni: the same evidence fails alone but not in a family of 1000
    assert stats.band_decision(13.0, 1.2, 64, upper=10, **common).outcome == "fail"
    big = stats.band_decision(13.0, 1.2, 64, upper=10, alpha=0.05, family_size=1000, min_images=5)
    assert big.outcome == "inconclusive" and big.p_value > 0.05


# --------------------------------------------------------------------------- verdict invariants (Hypothesis)

scores = st.floats(min_value=1.0, max_value=5.0, allow_nan=False)


@st.composite
def paired(draw):
    n = draw(st.integers(min_value=2, max_value=40))
    r = np.array(draw(st.lists(scores, min_size=n, max_size=n)))
    shift = draw(st.floats(min_value=-0.5, max_value=0.5))
    noise = np.array(draw(st.lists(st.floats(-0.5, 0.5), min_size=n, max_size=n)))
    c = np.clip(r * (1 + shift) + noise, 1, 5)
    tol = draw(st.sampled_from([5.0, 10.0, 25.0]))
    fam = draw(st.sampled_from([1, 7, 300]))
    return r, c, tol, fam


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paired(), st.randoms(use_true_random=False))
def test_verdict_invariants(data, rnd):
    r, c, tol, fam = data
    v = P.relative_change(r, c, tol_pct=tol, family_size=fam, resamples=500)
    assert v.outcome in ("pass", "fail", "inconclusive")
    if v.outcome == "pass":
        assert abs(v.statistic) < tol
        assert not (v.ci_high < -tol or v.ci_low > tol)
        assert v.n_needed is None
    if v.outcome == "fail":
        assert abs(v.statistic) > tol
        assert v.p_value < 0.05
    if v.outcome == "inconclusive":
        assert v.n_needed is not None and (v.n_needed > v.n or v.n < 5)
    # image order does not matter
    perm = np.array(rnd.sample(range(r.size), r.size))
    w = P.relative_change(r[perm], c[perm], tol_pct=tol, family_size=fam, resamples=500)
    assert w.outcome == v.outcome and w.n == v.n
    assert w.statistic == pytest.approx(v.statistic, abs=1e-9)
    assert (math.isnan(w.p_value) and math.isnan(v.p_value)) or w.p_value == pytest.approx(v.p_value, abs=1e-9)
    # NaN pairs are dropped and counted, and change nothing else
    k = rnd.randint(1, 3)
    r2 = np.concatenate([r, np.full(k, np.nan), [3.0]])
    c2 = np.concatenate([c, np.full(k, 2.0), [np.nan]])
    u = P.relative_change(r2, c2, tol_pct=tol, family_size=fam, resamples=500)
    assert u.n_dropped == k + 1 and u.n == v.n and u.outcome == v.outcome
    assert u.statistic == pytest.approx(v.statistic, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(paired())
def test_no_inflation_invariants(data):
    r, c, tol, fam = data
    v = P.no_inflation(r, c, tol_pct=tol, family_size=fam, resamples=300)
    if v.outcome == "pass":
        assert v.statistic < tol and not v.ci_low > tol
    if v.outcome == "fail":
        assert v.statistic > tol
