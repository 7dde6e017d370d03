"""Self-tests of miqa_checks.properties on planted synthetic score arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from miqa_checks import properties as P

N = 64
SEV_ROBUST = np.array([0.0, -1.0, -3.0, -6.0, -12.0])


def _ref(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return 1 + 4 * rng.uniform(0.35, 0.9, n)


def _cond(ref, pct, sd=0.02, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(ref * (1 + pct / 100) * (1 + rng.normal(0, sd, ref.size)), 1, 5)


# --------------------------------------------------------------------------- relative change


def test_relative_change_clear_effects():
    r = _ref()
    v = P.relative_change(r, _cond(r, 0), tol_pct=10)
    assert v.outcome == "pass" and abs(v.statistic) < 1 and v.n == N and v.n_dropped == 0
    assert v.ci_low < v.statistic < v.ci_high and v.threshold == "|delta| <= 10%"
    assert v.ref_mean == pytest.approx(r.mean())
    v = P.relative_change(r, _cond(r, -25), tol_pct=10, family_size=500)
    assert v.outcome == "fail" and v.statistic == pytest.approx(-25, abs=2) and v.p_value < 0.05
    v = P.relative_change(r, _cond(r, 20), tol_pct=10)
    assert v.outcome == "fail" and v.statistic > 10


def test_relative_change_small_n_inconclusive_with_n_needed():
    r = _ref(4)
    v = P.relative_change(r, _cond(r, 0), tol_pct=10)
    assert v.outcome == "inconclusive" and v.n == 4 and v.n_needed == 5
    assert "5" in v.reason
    # near the band edge with noisy scores: undecided, asks for more images
    r = _ref(20, seed=3)
    v = P.relative_change(r, _cond(r, -8, sd=0.15, seed=4), tol_pct=10, family_size=100)
    assert v.outcome == "inconclusive" and v.n_needed > 20 and str(v.n_needed) in v.reason


def test_relative_change_nan_pairs_dropped():
    r, c = _ref(), _cond(_ref(), 0)
    c[[3, 7]] = np.nan
    r[10] = np.nan
    v = P.relative_change(r, c, tol_pct=10)
    assert v.n == N - 3 and v.n_dropped == 3 and v.outcome == "pass"


def test_relative_change_degenerate_inputs():
    v = P.relative_change([np.nan] * 5, [3.0] * 5, tol_pct=10)
    assert v.outcome == "inconclusive" and v.n == 0 and math.isnan(v.statistic)
    v = P.relative_change([0.0] * 6, [3.0] * 6, tol_pct=10)
    assert v.outcome == "error"
    # identical scores: exact zero change passes
    r = _ref()
    assert P.relative_change(r, r, tol_pct=10).outcome == "pass"


def test_no_inflation_one_sided():
    r = _ref()
    assert P.no_inflation(r, _cond(r, -20), tol_pct=5).outcome == "pass"  # falling is fine
    v = P.no_inflation(r, _cond(r, 31), tol_pct=5, family_size=500)
    assert v.outcome == "fail" and v.threshold == "delta <= +5%"
    assert P.no_inflation(r, _cond(r, 4.5, sd=0.1), tol_pct=5).outcome == "inconclusive"


# --------------------------------------------------------------------------- severity response


def _levels(r, pcts, sd=0.02, seed=10):
    return np.stack([_cond(r, p, sd=sd, seed=seed + k) for k, p in enumerate(pcts)])


def test_severity_response_robust_passes():
    r = _ref()
    v = P.severity_response(r, _levels(r, SEV_ROBUST), trend_tol_pct=1, fall_required_pct=5)
    assert v.outcome == "pass" and v.statistic == pytest.approx(-12, abs=1.5)
    assert "trend" in v.reason and v.threshold.startswith("trend <= +1%/step")
    v = P.severity_response(r, _levels(r, [0, 0, -0.5, -1, -1.5]), trend_tol_pct=1)  # brightness
    assert v.outcome == "pass" and v.statistic == pytest.approx(-0.4, abs=0.3)  # slope, %/step


def test_severity_response_failures():
    r = _ref()
    rising = P.severity_response(r, _levels(r, [0, 3, 6, 9, 12]), trend_tol_pct=1, fall_required_pct=5,
                                 family_size=300)
    assert rising.outcome == "fail"
    flat = P.severity_response(r, _levels(r, [0, 0, 0, 0, 0]), trend_tol_pct=1, fall_required_pct=5,
                               family_size=300)
    assert flat.outcome == "fail" and "-5" in flat.threshold  # does not notice heavy damage
    flat_ok = P.severity_response(r, _levels(r, [0, 0, 0, 0, 0]), trend_tol_pct=1)
    assert flat_ok.outcome == "pass"  # no fall required (brightness)


def test_severity_response_nan_and_small_n():
    r = _ref()
    S = _levels(r, SEV_ROBUST)
    S[2, 5] = np.nan
    v = P.severity_response(r, S, trend_tol_pct=1, fall_required_pct=5)
    assert v.n == N - 1 and v.n_dropped == 1
    v = P.severity_response(r[:3], S[:, :3], trend_tol_pct=1, fall_required_pct=5)
    assert v.outcome == "inconclusive" and v.n_needed >= 5
    with pytest.raises(ValueError):
        P.severity_response(r, S[:4], trend_tol_pct=1)


# --------------------------------------------------------------------------- embeddings


def _emb(n=N, d=32, steps=(0.1, 0.2, 0.3, 0.4, 0.5), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    E = np.stack([X + rng.normal(0, s, (n, d)) for s in steps])
    return X, E


def test_embedding_consistency():
    X, E = _emb()
    v = P.embedding_consistency(X, E, tolerance=0.5)
    assert v.outcome == "pass" and 0.05 < v.statistic < 0.15 and v.cond_mean > v.statistic
    # scale-free: a model with 10x larger embeddings gives the same verdict
    w = P.embedding_consistency(10 * X, 10 * E, tolerance=0.5)
    assert w.statistic == pytest.approx(v.statistic) and w.outcome == v.outcome
    X, E = _emb(steps=(1.0, 1.1, 1.2, 1.3, 1.4))
    assert P.embedding_consistency(X, E, tolerance=0.5, family_size=100).outcome == "fail"
    X, E = _emb(steps=(0.3, 0.2, 0.1, 0.05, 0.02))  # shrinks with severity
    v = P.embedding_consistency(X, E, tolerance=0.5, family_size=100)
    assert v.outcome == "fail" and "shrinks" in v.reason
    X, E = _emb()
    X[4, 0] = np.nan
    v = P.embedding_consistency(X, E, tolerance=0.5)
    assert v.n_dropped == 1 and v.n == N - 1
    v = P.embedding_consistency(np.ones((10, 4)), np.ones((5, 10, 4)), tolerance=0.5)
    assert v.outcome == "inconclusive" and "spread" in v.reason


def test_published_displacement_and_correlation():
    X = np.zeros((4, 3))
    E = np.ones((5, 4, 3))
    assert P.published_displacement(X, E) == pytest.approx(math.sqrt(3))
    rho, lo, hi = P.displacement_score_correlation(np.arange(12.0), -np.arange(12.0) ** 2, seed=1)
    assert rho == pytest.approx(-1.0) and lo <= rho <= hi
    rho, lo, hi = P.displacement_score_correlation([1, 2], [3, 4])
    assert math.isnan(rho)
    rng = np.random.default_rng(2)
    x = rng.normal(size=35)
    rho, lo, hi = P.displacement_score_correlation(x, -x + rng.normal(0, 0.5, 35), seed=3)
    assert -1 < lo < rho < hi < 0


# --------------------------------------------------------------------------- deterministic checks


def test_repeatability():
    r = _ref()
    v = P.repeatability(r, r.copy(), tolerance=1e-3)
    assert v.outcome == "pass" and v.statistic == 0 and v.ci_low == v.ci_high == 0
    s = r.copy()
    s[5] += 0.01
    v = P.repeatability(r, s, tolerance=1e-3)
    assert v.outcome == "fail" and v.statistic == pytest.approx(0.01) and "1 of 64" in v.reason
    s = r.copy()
    s[5] = np.nan
    assert P.repeatability(r, s, tolerance=1e-3).outcome == "fail"  # NaN on one side only differs
    a, b = r.copy(), r.copy()
    a[:3] = b[:3] = np.nan
    v = P.repeatability(a, b, tolerance=1e-3)
    assert v.outcome == "pass" and v.n_dropped == 3 and v.n == N - 3
    assert P.repeatability(r[:3], r[:3], tolerance=1e-3).outcome == "inconclusive"


def test_output_validity():
    ok = np.ones(N, bool)
    s = _ref()
    v = P.output_validity(ok, s, max_parse_failure_rate=0.05, max_out_of_range_rate=0.0)
    assert v.outcome == "pass" and v.statistic == 0
    bad = ok.copy()
    bad[:13] = False
    s2 = s.copy()
    s2[:13] = np.nan
    v = P.output_validity(bad, s2, max_parse_failure_rate=0.05, max_out_of_range_rate=0.0, family_size=300)
    assert v.outcome == "fail" and v.statistic == pytest.approx(100 * 13 / 64)
    s3 = s.copy()
    s3[0] = 7.0  # "7/10" kept as 7 by the published rule
    v = P.output_validity(ok, s3, max_parse_failure_rate=0.05, max_out_of_range_rate=0.0)
    assert v.outcome == "fail" and "1/64 out of range" in v.reason
    v = P.output_validity(ok[:20], s[:20], max_parse_failure_rate=0.05, max_out_of_range_rate=0.0)
    assert v.outcome == "inconclusive" and v.n_needed == 59  # log(0.05) / log(0.95)
    # 2 failures in 64 at a 5 % limit: neither shown above nor below
    bad = ok.copy()
    bad[:2] = False
    v = P.output_validity(bad, np.where(bad, s, np.nan), max_parse_failure_rate=0.05, max_out_of_range_rate=0.0)
    assert v.outcome == "inconclusive" and v.n_needed > 64


# --------------------------------------------------------------------------- baseline


def test_baseline_agreement():
    rng = np.random.default_rng(5)
    old = _ref()
    new = old + rng.normal(0, 0.1, N)
    v = P.baseline_agreement(new, old, min_r=0.67)
    assert v.outcome == "pass" and v.statistic > 0.9 and v.ci_low < v.statistic < v.ci_high
    v = P.baseline_agreement(rng.uniform(1, 5, N), old, min_r=0.67, family_size=300)
    assert v.outcome == "fail" and v.p_value < 0.05
    v = P.baseline_agreement(np.full(N, 3.0), old, min_r=0.67)
    assert v.outcome == "inconclusive" and "constant" in v.reason
    v = P.baseline_agreement(new[:8], old[:8] + rng.normal(0, 0.6, 8), min_r=0.67)
    assert v.outcome in ("inconclusive", "pass", "fail")
    new2 = new.copy()
    new2[0] = np.nan
    assert P.baseline_agreement(new2, old, min_r=0.67).n_dropped == 1


def test_baseline_noninferiority():
    r = _ref()
    old_c = _cond(r, -5, seed=2)
    v = P.baseline_noninferiority(r, _cond(r, -5, seed=3), r, old_c, margin_pct=5)
    assert v.outcome == "pass" and abs(v.statistic) < 1
    v = P.baseline_noninferiority(r, _cond(r, -25, seed=3), r, old_c, margin_pct=5, family_size=300)
    assert v.outcome == "fail" and v.statistic == pytest.approx(20, abs=2)
    assert v.cond_mean > v.ref_mean
    # (k, n) conditions per image
    new_c = np.stack([_cond(r, p, seed=20 + i) for i, p in enumerate(SEV_ROBUST)])
    old_c = np.stack([_cond(r, p, seed=40 + i) for i, p in enumerate(SEV_ROBUST)])
    v = P.baseline_noninferiority(r, new_c, r, old_c, margin_pct=5)
    assert v.outcome == "pass" and v.n == N


def test_family_correlation():
    rng = np.random.default_rng(7)
    a = _ref()
    b = a + rng.normal(0, 0.2, N)
    c = a.copy()
    c[:5] = np.nan
    models, R = P.family_correlation({"a": a, "b": b, "c": c, "flat": np.full(N, 3.0)})
    assert models == ["a", "b", "c", "flat"]
    assert R.shape == (4, 4) and np.allclose(R, R.T, equal_nan=True)
    assert R[0, 0] == pytest.approx(1) and R[0, 2] == pytest.approx(1)
    assert R[0, 1] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert np.isnan(R[3]).all()


# --------------------------------------------------------------------------- calibration and speed


def test_false_fail_rate_at_band_edge():
    """True delta exactly at the tolerance: a single cell fails at about alpha, not more."""
    rng = np.random.default_rng(99)
    fails = 0
    reps = 400
    for i in range(reps):
        r = rng.normal(3.5, 0.6, 30)
        c = 1.1 * r + rng.normal(0, 0.3, 30)  # delta = +10 % = the tolerance
        fails += P.relative_change(r, c, tol_pct=10, seed=i, resamples=200).outcome == "fail"
    assert fails / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


def test_output_validity_weighs_requests_by_how_they_cluster():
    """36 requests per image: failures spread over the requests count almost as 36 trials per image
    (design effect ~1); the same rate in whole images that fail every request counts once per image."""
    images, per_image = 64, 36
    groups = np.repeat(np.arange(images), per_image)
    rng = np.random.default_rng(3)
    spread = rng.random(images * per_image) >= 0.10  # 10 % of requests fail, independently
    v = P.output_validity(spread, np.where(spread, 3.0, np.nan), max_parse_failure_rate=0.05,
                          max_out_of_range_rate=0.0, family_size=150, groups=groups)
    assert v.outcome == "fail" and v.n == images, v.reason
    whole = ~np.isin(groups, np.arange(6))  # 6 of 64 images fail all their requests (9.4 %)
    v = P.output_validity(whole, np.where(whole, 3.0, np.nan), max_parse_failure_rate=0.05,
                          max_out_of_range_rate=0.0, family_size=150, groups=groups)
    assert v.outcome == "inconclusive" and v.n_needed > images, v.reason
    few = np.ones(3 * per_image, bool)  # 3 images, every answer parsed: not a pass on 3 images
    v = P.output_validity(few, np.full(few.size, 3.0), max_parse_failure_rate=0.05, max_out_of_range_rate=0.0,
                          groups=np.repeat(np.arange(3), per_image))
    assert v.outcome == "inconclusive"
