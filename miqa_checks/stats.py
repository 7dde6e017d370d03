"""Pure numerical pieces behind the property verdicts (see docs/STATISTICS.md).

Conventions: the image axis is always the **last** axis; ``n`` = paired images. Percentages are
relative changes of a mean against a reference mean, times 100. Everything here is vectorised
numpy (plus ``scipy.special`` for distribution functions, which is ~100x cheaper per call than
``scipy.stats``), so that one property cell costs about a millisecond.

Pieces:

- :func:`drop_nan_pairs` -- keep images scored on every side, count the rest.
- :func:`ratio_of_means` / :func:`paired_delta` -- a ratio of means and its per-image influence
  values (the delta method), e.g. the published ``(mean(c) - mean(r)) / mean(r) * 100``.
- :func:`bootstrap_indices` / :func:`bootstrap_weights` / :func:`percentile_ci` -- seeded,
  cached ``(B, n)`` resampling matrices and percentile intervals.
- :func:`t_cdf`, :func:`t_sf`, :func:`t_ppf`, :func:`z_ppf`, :func:`bonferroni`,
  :func:`fisher_z`, :func:`fisher_ci`, :func:`clopper_pearson`, :func:`binom_sf_ge`.
- :func:`band_decision` / :func:`combine` -- the pass / fail / inconclusive rule for an estimate
  with a standard error against a tolerance band, and for a cell made of several parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import special

#: n_needed never exceeds this.
N_CAP = 100_000

PASS, FAIL, INCONCLUSIVE, ERROR = "pass", "fail", "inconclusive", "error"


# --------------------------------------------------------------------------- pairing


def drop_nan_pairs(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Keep the images that are finite in every array.

    arrays: each shaped ``(..., n)`` with the image axis last (same n). An image is kept only
    when all of its entries in all arrays are finite.
    Returns (the filtered float arrays, number of images dropped).
    """
    arrs = [np.asarray(a, dtype=float) for a in arrays]
    n = arrs[0].shape[-1]
    keep = np.ones(n, dtype=bool)
    for a in arrs:
        if a.shape[-1] != n:
            raise ValueError(f"paired arrays differ in length: {a.shape[-1]} != {n}")
        keep &= np.isfinite(a).reshape(-1, n).all(axis=0)
    dropped = int(n - keep.sum())
    if dropped == 0:
        return arrs, 0
    return [a[..., keep] for a in arrs], dropped


# --------------------------------------------------------------------------- estimators


def ratio_of_means(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q = mean(num) / mean(den) and its per-image influence values.

    num: ``(..., n)``; den: ``(n,)`` or ``(..., n)``.
    Returns ``Q`` shaped ``(...)`` and ``psi`` shaped ``(..., n)`` with
    ``psi_i = (num_i - Q * den_i) / mean(den)``: mean(psi) = 0 and, by the delta method,
    ``SE(Q) ~= sd(psi) / sqrt(n)``.
    """
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    md = den.mean(axis=-1)
    q = num.mean(axis=-1) / md
    psi = (num - np.expand_dims(q, -1) * den) / np.expand_dims(md, -1)
    return q, psi


def paired_delta(ref: np.ndarray, cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The published percentage change of the mean and its influence values, in percent.

    ref: ``(n,)``; cond: ``(..., n)`` paired with ref by image.
    delta = (mean(cond) - mean(ref)) / mean(ref) * 100; with R = delta/100,
    psi_i = (c_i - (1 + R) r_i) / mean(r) * 100, so SE(delta) = sd(psi) / sqrt(n).
    """
    ref = np.asarray(ref, dtype=float)
    cond = np.asarray(cond, dtype=float)
    q, psi = ratio_of_means(cond - ref, ref)
    return q * 100.0, psi * 100.0


def standard_error(psi: np.ndarray) -> np.ndarray:
    """sd(psi, ddof=1) / sqrt(n) along the last axis (NaN when n < 2)."""
    psi = np.asarray(psi, dtype=float)
    n = psi.shape[-1]
    if n < 2:
        return np.full(psi.shape[:-1], np.nan)
    return psi.std(axis=-1, ddof=1) / math.sqrt(n)


# --------------------------------------------------------------------------- bootstrap


@lru_cache(maxsize=32)
def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED_B007, n, resamples])
    idx = rng.integers(0, n, size=(resamples, n), dtype=np.int64)
    idx.setflags(write=False)
    return idx


@lru_cache(maxsize=32)
def _weights(n: int, resamples: int, seed: int) -> np.ndarray:
    idx = _indices(n, resamples, seed)
    flat = (idx + n * np.arange(resamples, dtype=np.int64)[:, None]).ravel()
    w = np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(float) / n
    w.setflags(write=False)
    return w


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """Seeded resampling indices, shape ``(resamples, n)``; cached and read-only.

    Depends only on (n, resamples, seed): the same seed gives the same resamples everywhere.
    """
    return _indices(int(n), int(resamples), int(seed))


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """The same resamples as :func:`bootstrap_indices` as weights ``(resamples, n)``.

    Row b holds count_i / n, so ``weights @ x`` is the mean of x over resample b for every b
    at once (one small matrix product instead of a gather).
    """
    return _weights(int(n), int(resamples), int(seed))


def bootstrap_means(columns: np.ndarray, seed: int, resamples: int) -> np.ndarray:
    """Resampled means: columns ``(n, k)`` -> ``(resamples, k)``."""
    columns = np.asarray(columns, dtype=float)
    return bootstrap_weights(columns.shape[0], resamples, seed) @ columns


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates ``(B,)``; non-finite replicates ignored."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- distributions


def t_cdf(x: float, df: float) -> float:
    """Student t CDF."""
    return float(special.stdtr(df, x))


def t_sf(x: float, df: float) -> float:
    """Student t survival function P(T > x)."""
    return float(special.stdtr(df, -x))


def t_ppf(p: float, df: float) -> float:
    """Student t quantile."""
    return float(special.stdtrit(df, p))


def z_ppf(p: float) -> float:
    """Standard normal quantile."""
    return float(special.ndtri(p))


def z_cdf(x: float) -> float:
    """Standard normal CDF."""
    return float(special.ndtr(x))


def bonferroni(p: float, family_size: int) -> float:
    """min(1, p * family_size); NaN stays NaN."""
    if not np.isfinite(p):
        return math.nan
    return min(1.0, float(p) * max(1, int(family_size)))


def fisher_z(r: float) -> float:
    """atanh(r), with r clipped just inside (-1, 1)."""
    r = min(max(float(r), -1.0 + 1e-15), 1.0 - 1e-15)
    return math.atanh(r)


def fisher_ci(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Fisher-z interval for a Pearson r over n pairs (NaN when n < 4)."""
    if n < 4 or not np.isfinite(r):
        return math.nan, math.nan
    z = fisher_z(r)
    h = z_ppf(0.5 + level / 2.0) / math.sqrt(n - 3)
    return math.tanh(z - h), math.tanh(z + h)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials."""
    if n <= 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo = 0.0 if k <= 0 else float(special.betaincinv(k, n - k + 1, a))
    hi = 1.0 if k >= n else float(special.betaincinv(k + 1, n - k, 1.0 - a))
    return lo, hi


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound."""
    if n <= 0:
        return math.nan
    return 1.0 if k >= n else float(special.betaincinv(k + 1, n - k, 1.0 - alpha))


def binom_sf_ge(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(special.bdtrc(k - 1, n, p))


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """The outcome of one part of a property cell.

    p_value: Bonferroni-adjusted one-sided p-value that the true value lies outside the band.
    bound_low / bound_high: the one-sided (1 - alpha) bounds (together the 1 - 2 alpha interval).
    n_needed: images at which, with the observed estimate and SD, the part would be decided
        (None when decided, or when the part can never pass and is not heading to fail).
    """

    outcome: str
    p_value: float
    bound_low: float
    bound_high: float
    n_needed: int | None


def _ceil_n(x: float, floor: int) -> int:
    if not np.isfinite(x):
        return N_CAP
    return int(min(N_CAP, max(floor, math.ceil(x))))


def band_decision(
    est: float,
    se: float,
    n: int,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
    alpha: float,
    family_size: int,
    min_images: int,
    can_pass: bool = True,
) -> Decision:
    """Pass / fail / inconclusive for an estimate against the band ``lower <= theta <= upper``.

    est, se: the estimate and its standard error from n images (t with n - 1 df).
    FAIL when the Bonferroni-adjusted (x family_size) one-sided p-value that theta lies outside
    the band is < alpha. PASS when the one-sided (1 - alpha) bounds both lie strictly inside
    the band (two one-sided tests; a per-cell level, since a pass is not a false alarm).
    INCONCLUSIVE otherwise, and always when n < min_images. ``can_pass=False`` makes a
    fail-only guard (never passes by itself; "not failed" is reported as pass).
    """
    est = float(est)
    se = float(se)
    family_size = max(1, int(family_size))
    if n < 2 or not np.isfinite(est) or not np.isfinite(se):
        return Decision(INCONCLUSIVE, math.nan, math.nan, math.nan, max(2, min_images))
    df = n - 1
    tq = t_ppf(1.0 - alpha, df)
    b_lo, b_hi = est - tq * se, est + tq * se

    def _p_above(bound: float) -> float:  # P(T >= observed | theta = bound), violation above
        if not np.isfinite(bound):
            return 1.0
        if se == 0.0:
            return 0.0 if est > bound else (0.5 if est == bound else 1.0)
        return t_sf((est - bound) / se, df)

    def _p_below(bound: float) -> float:
        if not np.isfinite(bound):
            return 1.0
        if se == 0.0:
            return 0.0 if est < bound else (0.5 if est == bound else 1.0)
        return t_cdf((est - bound) / se, df)

    p_raw = min(_p_above(upper), _p_below(lower))
    p_adj = bonferroni(p_raw, family_size)
    inside = lower < est < upper
    would_fail = p_adj < alpha
    would_pass = (b_lo > lower) and (b_hi < upper) if can_pass else not would_fail

    # n at which the observed effect would decide (normal approximation, as documented).
    sd = se * math.sqrt(n)
    if inside:
        if can_pass:
            margin = min(upper - est, est - lower)
            need = (z_ppf(1.0 - alpha) * sd / margin) ** 2 if sd > 0 else 0.0
            n_needed: int | None = _ceil_n(need, max(2, min_images))
        else:
            n_needed = None
    else:
        margin = max(est - upper, lower - est)
        if margin <= 0:
            n_needed = N_CAP
        else:
            need = (z_ppf(1.0 - alpha / family_size) * sd / margin) ** 2 if sd > 0 else 0.0
            n_needed = _ceil_n(need, max(2, min_images))

    if n < min_images:
        return Decision(INCONCLUSIVE, p_adj, b_lo, b_hi, n_needed if n_needed is not None else min_images)
    if would_fail:
        return Decision(FAIL, p_adj, b_lo, b_hi, None)
    if would_pass:
        return Decision(PASS, p_adj, b_lo, b_hi, None)
    if n_needed is not None and n_needed <= n:  # normal approx says decided; t says not yet
        n_needed = n + 1
    return Decision(INCONCLUSIVE, p_adj, b_lo, b_hi, n_needed)


def combine(parts: Sequence[Decision]) -> tuple[str, float, int | None]:
    """A cell made of parts: fail if any part fails, pass if all pass, else inconclusive.

    Returns (outcome, smallest adjusted p-value, n_needed = largest over undecided parts).
    The caller multiplies family_size by len(parts) beforehand so the cell stays at alpha.
    """
    ps = [d.p_value for d in parts if np.isfinite(d.p_value)]
    p = min(ps) if ps else math.nan
    if any(d.outcome == FAIL for d in parts):
        return FAIL, p, None
    if all(d.outcome == PASS for d in parts):
        return PASS, p, None
    needs = [d.n_needed for d in parts if d.outcome != PASS and d.n_needed is not None]
    return INCONCLUSIVE, p, (max(needs) if needs else None)
