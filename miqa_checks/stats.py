"""Pure numerical pieces behind the property verdicts (see docs/STATISTICS.md).

Conventions: the image axis is always the **last** axis; ``n`` = paired images. Percentages are
relative changes of a mean against a reference mean, times 100. Everything here is vectorised
numpy (plus ``scipy.special`` for distribution functions, which is ~100x cheaper per call than
``scipy.stats``), so that one property cell costs about a millisecond. scipy is imported on the
first distribution function called, not with this module (importing it costs a run's start-up
0.2-0.5 s).

Pieces:

- :func:`drop_nan_pairs` -- keep images scored on every side, count the rest.
- :func:`group_codes` / :func:`n_groups` / :func:`standard_error` -- independent images, or
  images in groups (source image, clip, series, patient) with a cluster-robust SE.
- :func:`ratio_of_means` / :func:`paired_delta` -- a ratio of means and its per-image influence
  values (the delta method), e.g. the published ``(mean(c) - mean(r)) / mean(r) * 100``.
- :func:`bootstrap_indices` / :func:`bootstrap_weights` / :func:`percentile_ci` -- seeded,
  cached ``(B, n)`` resampling matrices and percentile intervals (used where no t rule
  applies, e.g. a Spearman rho over cells).
- :func:`t_cdf`, :func:`t_sf`, :func:`t_ppf`, :func:`z_ppf`, :func:`bonferroni`,
  :func:`fisher_z`, :func:`fisher_ci`, :func:`clopper_pearson`, :func:`binom_sf_ge`.
- :func:`band_decision` / :func:`combine` -- the pass / fail / inconclusive rule for an estimate
  with a standard error against a tolerance band, and for a cell made of several parts;
  :func:`n_to_decide` -- the units at which that same t rule decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

#: n_needed never exceeds this.
N_CAP = 100_000

PASS, FAIL, INCONCLUSIVE, ERROR = "pass", "fail", "inconclusive", "error"
#: The judge cannot provide what the property needs (e.g. embeddings from a served model).
NOT_APPLICABLE = "not_applicable"


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


def group_codes(groups: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray:
    """Group labels ``(n,)`` (any hashable: source image, clip, series, patient) -> float codes
    ``0 .. G-1`` ``(n,)``, so they can ride through :func:`drop_nan_pairs`. None: every image is
    its own group (``arange(n)``)."""
    if groups is None:
        return np.arange(n, dtype=float)
    g = np.asarray(groups, dtype=object).reshape(-1)
    if g.size != n:
        raise ValueError(f"groups has {g.size} entries for {n} images")
    return _codes(tuple(str(x) for x in g)).copy()


@lru_cache(maxsize=256)
def _codes(labels: tuple[str, ...]) -> np.ndarray:
    """Codes of group labels (memoised: every cell of a dataset has the same groups)."""
    _, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return codes.astype(float)


def n_groups(codes: np.ndarray) -> int:
    """Number of distinct groups among the (kept) images."""
    return int(np.unique(np.asarray(codes)).size)


def standard_error(psi: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Standard error of mean(psi) along the last axis (NaN when fewer than 2 units).

    groups: ``(n,)`` codes from :func:`group_codes`, or None for independent images
    (``sd(psi, ddof=1) / sqrt(n)``). With groups the SE is cluster-robust: psi is summed per
    group, ``SE = sqrt(G / (G - 1) * sum_g S_g^2) / n`` (equal to the plain SE when every group
    holds one image); refer it to t with G - 1 df (pass ``n = G`` to :func:`band_decision`).
    """
    psi = np.asarray(psi, dtype=float)
    n = psi.shape[-1]
    if groups is None:
        if n < 2:
            return np.full(psi.shape[:-1], np.nan)
        return psi.std(axis=-1, ddof=1) / math.sqrt(n)
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    g = int(inv.max()) + 1 if n else 0
    if g < 2:
        return np.full(psi.shape[:-1], np.nan)
    centred = psi - psi.mean(axis=-1, keepdims=True)
    sums = centred @ np.eye(g)[inv]  # (..., G): psi summed per group
    return np.sqrt(g / (g - 1) * (sums**2).sum(axis=-1)) / n


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


def _special():
    """``scipy.special``, imported on first use."""
    from scipy import special

    return special


def t_cdf(x: float, df: float) -> float:
    """Student t CDF."""
    return float(_special().stdtr(df, x))


def t_sf(x: float, df: float) -> float:
    """Student t survival function P(T > x)."""
    return float(_special().stdtr(df, -x))


@lru_cache(maxsize=4096)
def t_ppf(p: float, df: float) -> float:
    """Student t quantile (memoised: cells share their (p, df) pairs)."""
    return float(_special().stdtrit(df, p))


def z_ppf(p: float) -> float:
    """Standard normal quantile."""
    return float(_special().ndtri(p))


def z_cdf(x: float) -> float:
    """Standard normal CDF."""
    return float(_special().ndtr(x))


def bonferroni(p: float, family_size: float) -> float:
    """min(1, p * family_size); NaN stays NaN. family_size may be a weighted (effective) size
    ``alpha / cell_alpha``, see :mod:`miqa_checks.families`; it is never taken below 1."""
    if not np.isfinite(p):
        return math.nan
    return min(1.0, float(p) * max(1.0, float(family_size)))


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


def clopper_pearson(k: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n trials (k may be fractional)."""
    if n <= 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo = 0.0 if k <= 0 else float(_special().betaincinv(k, n - k + 1, a))
    hi = 1.0 if k >= n else float(_special().betaincinv(k + 1, n - k, 1.0 - a))
    return lo, hi


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound."""
    if n <= 0:
        return math.nan
    return 1.0 if k >= n else float(_special().betaincinv(k + 1, n - k, 1.0 - alpha))


def binom_sf_ge(k: float, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), as the regularised incomplete beta I_p(k, n - k + 1),
    which also defines it for a fractional k (a sum of per-group shares in [0, 1])."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return float(_special().betainc(k, n - k + 1, p))


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """The outcome of one part of a property cell.

    p_value: Bonferroni-adjusted one-sided p-value that the true value lies outside the band.
    bound_low / bound_high: the one-sided (1 - alpha) bounds (together the 1 - 2 alpha interval).
    n_needed: units (images, or groups when grouped) at which, with the observed estimate and
        per-unit SD, the same t rule would decide (None when decided, or when the part can never
        pass and is not heading to fail).
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


def n_to_decide(margin: float, sd: float, alpha_one_sided: float, floor: int = 2) -> int:
    """Smallest n >= floor with ``t_{1 - a, n - 1} * sd / sqrt(n) < margin``: the units at which a
    one-sided t test at level a, with this per-unit SD, separates an estimate ``margin`` away
    from a band edge (the rule :func:`band_decision` applies). N_CAP when never (margin <= 0)."""
    floor = max(2, int(floor))
    if not margin > 0 or not np.isfinite(sd):
        return N_CAP
    if sd <= 0:
        return floor
    return smallest_n(lambda m: t_ppf(1.0 - alpha_one_sided, m - 1) * sd / math.sqrt(m) < margin, floor)


def smallest_n(ok: Callable[[int], bool], floor: int) -> int:
    """Smallest n >= floor with ok(n), for an ok that stays true once true (doubling, then
    bisection); N_CAP when not even N_CAP is ok."""
    if ok(floor):
        return floor
    lo, hi = floor, min(N_CAP, floor * 2)
    while not ok(hi):
        if hi >= N_CAP:
            return N_CAP
        lo, hi = hi, min(N_CAP, hi * 2)
    while hi - lo > 1:  # ok(hi), not ok(lo)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def band_decision(
    est: float,
    se: float,
    n: int,
    *,
    lower: float = -math.inf,
    upper: float = math.inf,
    alpha: float,
    family_size: float,
    min_images: int,
    can_pass: bool = True,
) -> Decision:
    """Pass / fail / inconclusive for an estimate against the band ``lower <= theta <= upper``.

    est, se: the estimate and its standard error from n independent units (images, or groups
    of images; t with n - 1 df).
    FAIL when the weighted-Bonferroni-adjusted (x family_size = alpha / cell alpha) one-sided
    p-value that theta lies outside the band is < alpha. PASS when the one-sided (1 - alpha)
    bounds both lie strictly inside the band (two one-sided tests; a per-cell level, since a
    pass is not a false alarm). INCONCLUSIVE otherwise, and always when n < min_images.
    ``bound_low`` / ``bound_high`` are the (1 - 2 alpha) t interval the reports print, so a pass
    is exactly "that interval lies inside the band". ``can_pass=False`` makes a fail-only guard
    (never passes by itself; "not failed" is reported as pass).
    """
    est = float(est)
    se = float(se)
    family_size = max(1.0, float(family_size))
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

    def _n_needed() -> int | None:
        """Units at which the same t rule, with the observed estimate and per-unit SD, decides."""
        sd = se * math.sqrt(n)
        floor = max(2, min_images)
        if inside:
            return n_to_decide(min(upper - est, est - lower), sd, alpha, floor) if can_pass else None
        return n_to_decide(max(est - upper, lower - est), sd, alpha / family_size, floor)

    if n < min_images:
        need = _n_needed()
        return Decision(INCONCLUSIVE, p_adj, b_lo, b_hi, need if need is not None else min_images)
    if would_fail:
        return Decision(FAIL, p_adj, b_lo, b_hi, None)
    if would_pass:
        return Decision(PASS, p_adj, b_lo, b_hi, None)
    return Decision(INCONCLUSIVE, p_adj, b_lo, b_hi, _n_needed())


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
