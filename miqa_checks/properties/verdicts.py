"""One pure function per property: paired score arrays -> :class:`Verdict`.

Every statistical function takes the keyword arguments ``alpha`` (family-wise false-fail rate),
``family_size`` (the weighted Bonferroni factor ``alpha / cell alpha``, see
:mod:`miqa_checks.families`), ``min_images`` (below this many units a cell is inconclusive),
``groups`` (optional ``(n,)`` group label per image: source image, clip, series or patient;
None = independent images), and ``seed`` / ``resamples`` (kept for callers; no verdict interval
is bootstrapped any more). The decision rule is in docs/STATISTICS.md; in short:

- the statistic is the published percentage change of the mean over paired images
  (pairs with a NaN on either side dropped and counted in ``n_dropped``);
- the unit of replication is the group: delta-method influence values are summed per group
  (cluster-robust SE) and referred to t with G - 1 df; ``n`` = G, ``n_images`` beside it;
- FAIL when the weighted-Bonferroni-adjusted one-sided p-value that the true value lies outside
  the tolerance band is < alpha;
- PASS when the 1 - 2 alpha t interval lies inside the band (two one-sided tests, per cell);
- INCONCLUSIVE otherwise, or when n < min_images, with ``n_needed`` (same t rule, in units).

``ci_low`` / ``ci_high`` are that 1 - 2 alpha t interval (90 % at alpha 0.05): the interval the
decision uses, so a printed interval inside the band is a pass and vice versa.

Shapes: score arrays are ``(n,)`` paired by image (same order), ``by_severity`` is ``(5, n)``,
embeddings are ``(n, D)`` and ``(5, n, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .. import stats
from ..stats import ERROR, FAIL, INCONCLUSIVE, PASS

nan = math.nan

__all__ = [
    "Verdict",
    "relative_change",
    "no_inflation",
    "severity_response",
    "embedding_consistency",
    "published_displacement",
    "displacement_score_correlation",
    "repeatability",
    "output_validity",
    "baseline_agreement",
    "baseline_noninferiority",
    "family_correlation",
]


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass" | "fail" | "inconclusive" | "error"
    statistic: float  # the headline number, e.g. delta_pct (NaN when undefined)
    ci_low: float
    ci_high: float  # the (1 - 2 alpha) interval the decision uses (t, Clopper-Pearson or Fisher)
    p_value: float  # weighted-Bonferroni-adjusted p-value that the property is violated; NaN if n/a
    threshold: str  # human-readable band
    n: int  # independent units used: groups of images (= images when ungrouped), after NaN drops
    reason: str  # one sentence; for inconclusive also the n that would decide
    n_needed: int | None = None
    ref_mean: float = nan  # clean_mean / no-attribute mean
    cond_mean: float = nan
    n_dropped: int = 0  # pairs dropped because a score was NaN (parse failure/error)
    n_images: int = 0  # paired images used (>= n; equal when every image is its own group)


def _fmt(x: float, pct: bool = True) -> str:
    if not np.isfinite(x):
        return "nan"
    return f"{x:+.2f}%" if pct else f"{x:.3g}"


def _undecidable(threshold: str, n: int, dropped: int, why: str, min_images: int, n_images: int | None = None,
                 **means: float) -> Verdict:
    return Verdict(
        INCONCLUSIVE, nan, nan, nan, nan, threshold, n,
        f"{why} (n={n}, {dropped} dropped); at least {max(min_images, 2)} usable paired images are needed.",
        n_needed=max(min_images, 2), n_dropped=dropped, n_images=n if n_images is None else n_images, **means,
    )


def _n_txt(n: int, n_images: int) -> str:
    """``n=12`` or, when grouped, ``n=4 groups, 12 images``."""
    return f"n={n}" if n == n_images else f"n={n} groups, {n_images} images"


def _units(codes: np.ndarray) -> tuple[int, np.ndarray | None]:
    """(number of independent units, groups for standard_error or None when all singletons)."""
    g = stats.n_groups(codes)
    return g, (None if g == codes.size else codes)


def _reason(outcome: str, what: str, est_txt: str, bounds_txt: str, threshold: str, p: float,
            n: int, n_needed: int | None, min_images: int, n_images: int | None = None) -> str:
    ni = n if n_images is None else n_images
    unit = "paired images" if ni == n else "groups of images"
    if outcome == PASS:
        return f"{what} {est_txt}, {bounds_txt}, lies within {threshold} ({_n_txt(n, ni)})."
    if outcome == FAIL:
        return f"{what} {est_txt} violates {threshold}: Bonferroni-adjusted p={p:.2g} ({_n_txt(n, ni)})."
    short = f"only {_n_txt(n, ni)}, below min_images={min_images}; " if n < min_images else ""
    need = f"about {n_needed} {unit} would decide" if n_needed is not None else f"more {unit} would decide"
    return f"{what} {est_txt}, {bounds_txt}, is undecided against {threshold}: {short}{need}."


def _bounds_txt(d: stats.Decision, alpha: float) -> str:
    """The printed interval: the (1 - 2 alpha) t interval whose ends are the decision's bounds."""
    return f"{int(round((1 - 2 * alpha) * 100))}% interval [{d.bound_low:+.2f}, {d.bound_high:+.2f}]"


# --------------------------------------------------------------------------- % change properties


def _delta_property(ref, cond, *, lower: float, upper: float, threshold: str, alpha: float,
                    family_size: float, min_images: int, groups) -> Verdict:
    r0 = np.asarray(ref, dtype=float)
    (r, c, codes), dropped = stats.drop_nan_pairs(r0, cond, stats.group_codes(groups, r0.shape[-1]))
    n_img = r.size
    g, grp = _units(codes)
    if g < 2:
        return _undecidable(threshold, g, dropped, "fewer than 2 paired scores (or groups)", min_images, n_img)
    ref_mean, cond_mean = float(r.mean()), float(c.mean())
    if ref_mean <= 0:
        return Verdict(ERROR, nan, nan, nan, nan, threshold, g,
                       f"reference mean is {ref_mean:.3g}: a percentage change is undefined on the 1..5 scale.",
                       ref_mean=ref_mean, cond_mean=cond_mean, n_dropped=dropped, n_images=n_img)
    delta, psi = stats.paired_delta(r, c)
    delta = float(delta)
    se = float(stats.standard_error(psi, grp))
    d = stats.band_decision(delta, se, g, lower=lower, upper=upper, alpha=alpha,
                            family_size=family_size, min_images=min_images)
    reason = _reason(d.outcome, "mean score change", _fmt(delta), _bounds_txt(d, alpha) + "%", threshold,
                     d.p_value, g, d.n_needed, min_images, n_img)
    return Verdict(d.outcome, delta, d.bound_low, d.bound_high, d.p_value, threshold, g, reason,
                   n_needed=d.n_needed if d.outcome == INCONCLUSIVE else None,
                   ref_mean=ref_mean, cond_mean=cond_mean, n_dropped=dropped, n_images=n_img)


def relative_change(ref, cond, *, tol_pct: float, alpha: float = 0.05, family_size: float = 1,
                    min_images: int = 5, seed: int = 0, resamples: int = 2000, groups=None) -> Verdict:
    """Two-sided equivalence: |delta| <= tol_pct, delta = (mean(cond) - mean(ref)) / mean(ref) * 100.

    ref, cond: ``(n,)`` paired per image. Used for corruption stability, metadata vs none,
    attribute A vs B, paraphrase vs base.
    """
    tol = float(tol_pct)
    return _delta_property(ref, cond, lower=-tol, upper=tol, threshold=f"|delta| <= {tol:g}%",
                           alpha=alpha, family_size=family_size, min_images=min_images, groups=groups)


def no_inflation(ref, cond, *, tol_pct: float, alpha: float = 0.05, family_size: float = 1,
                 min_images: int = 5, seed: int = 0, resamples: int = 2000, groups=None) -> Verdict:
    """One-sided: delta <= +tol_pct (a worse image must not score higher than its original).

    Fail when delta is significantly above tol; pass when its one-sided (1 - alpha) upper bound
    is below tol.
    """
    tol = float(tol_pct)
    return _delta_property(ref, cond, lower=-math.inf, upper=tol, threshold=f"delta <= +{tol:g}%",
                           alpha=alpha, family_size=family_size, min_images=min_images, groups=groups)


_SEV_W = (np.arange(1, 6, dtype=float) - 3.0) / 10.0  # least-squares slope weights for x = 1..5


def severity_response(ref, by_severity, *, trend_tol_pct: float, fall_required_pct: float | None = None,
                      alpha: float = 0.05, family_size: float = 1, min_images: int = 5, seed: int = 0,
                      resamples: int = 2000, groups=None) -> Verdict:
    """Score must not rise with severity, and (optionally) must fall enough at severity 5.

    ref: ``(n,)`` clean scores; by_severity: ``(5, n)`` scores at severities 1..5, paired by image.
    Trend = mean per-image least-squares slope over severities 1..5, as % of mean(ref) per step:
    fail if significantly > trend_tol_pct, pass if its (1 - alpha) upper bound is below it.
    Fall (when fall_required_pct is given): delta at severity 5 <= -fall_required_pct.
    Images missing any of the six scores are dropped. Both parts share the cell, so each is
    tested at family_size * parts. statistic = delta at severity 5 when a fall is required,
    else the trend in %/step; the other number is in the reason.
    """
    S = np.asarray(by_severity, dtype=float)
    if S.ndim != 2 or S.shape[0] != 5:
        raise ValueError(f"by_severity must be (5, n), got {S.shape}")
    fall = None if fall_required_pct is None else float(fall_required_pct)
    tt = float(trend_tol_pct)
    threshold = f"trend <= +{tt:g}%/step" + (f" and delta_sev5 <= -{fall:g}%" if fall is not None else "")
    r0 = np.asarray(ref, dtype=float)
    (r, S, codes), dropped = stats.drop_nan_pairs(r0, S, stats.group_codes(groups, r0.shape[-1]))
    n_img = r.size
    n, grp = _units(codes)
    if n < 2:
        return _undecidable(threshold, n, dropped, "fewer than 2 images (or groups) scored at every severity",
                            min_images, n_img)
    ref_mean = float(r.mean())
    if ref_mean <= 0:
        return Verdict(ERROR, nan, nan, nan, nan, threshold, n, "reference mean <= 0: percentages undefined.",
                       ref_mean=ref_mean, n_dropped=dropped, n_images=n_img)
    parts = 2 if fall is not None else 1
    fam = family_size * parts
    b = _SEV_W @ S  # (n,) per-image slope, score points per step
    slope, psi_s = stats.ratio_of_means(b, r)
    slope, psi_s = float(slope) * 100.0, psi_s * 100.0
    d_trend = stats.band_decision(slope, float(stats.standard_error(psi_s, grp)), n, upper=tt, alpha=alpha,
                                  family_size=fam, min_images=min_images)
    decisions = [d_trend]
    delta5, psi5 = stats.paired_delta(r, S[4])
    delta5 = float(delta5)
    if fall is not None:
        d_fall = stats.band_decision(delta5, float(stats.standard_error(psi5, grp)), n, upper=-fall, alpha=alpha,
                                     family_size=fam, min_images=min_images)
        decisions.append(d_fall)
    outcome, p, n_needed = stats.combine(decisions)
    headline = decisions[1] if fall is not None else d_trend
    statistic = delta5 if fall is not None else slope
    lo, hi = headline.bound_low, headline.bound_high
    trend_txt = f"trend {slope:+.2f}%/step ({d_trend.outcome}, upper bound {d_trend.bound_high:+.2f})"
    fall_txt = (f"delta at severity 5 {delta5:+.2f}% ({decisions[1].outcome}, upper bound "
                f"{decisions[1].bound_high:+.2f}, needs <= -{fall:g}%)" if fall is not None
                else f"delta at severity 5 {delta5:+.2f}% (no fall required)")
    nt = _n_txt(n, n_img)
    if outcome == PASS:
        reason = f"{trend_txt}; {fall_txt}: within {threshold} ({nt})."
    elif outcome == FAIL:
        reason = f"{trend_txt}; {fall_txt}: violates {threshold}, Bonferroni-adjusted p={p:.2g} ({nt})."
    else:
        short = f"only {nt}, below min_images={min_images}; " if n < min_images else ""
        unit = "paired images" if n == n_img else "groups of images"
        reason = f"{trend_txt}; {fall_txt}: undecided, {short}about {n_needed} {unit} would decide."
    return Verdict(outcome, statistic, lo, hi, p, threshold, n, reason,
                   n_needed=n_needed if outcome == INCONCLUSIVE else None,
                   ref_mean=ref_mean, cond_mean=float(S[4].mean()), n_dropped=dropped, n_images=n_img)


# --------------------------------------------------------------------------- embeddings


def _distances(X: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean (n, D), corrupted (k, n, D) -> distance of each clean embedding to the clean
    centroid (n,), and displacement of each image from its clean embedding (k, n).

    The distances to the sample centroid are scaled by sqrt(n / (n - 1)): the sample centroid
    sits closer to every point than the true one (E||x_i - mean||^2 = (n - 1) / n * E||x_i - mu||^2),
    which made the spread 0.89x too small at n = 5 and every relative displacement too large."""
    n = X.shape[0]
    scale = math.sqrt(n / (n - 1)) if n > 1 else 1.0
    return scale * np.linalg.norm(X - X.mean(axis=0), axis=1), np.linalg.norm(E - X[None], axis=2)


def relative_displacements(clean_emb, emb_by_severity) -> np.ndarray:
    """Mean displacement per severity in clean spreads, as ``embedding_consistency`` measures it.

    clean_emb: ``(n, D)``; emb_by_severity: ``(k, n, D)`` -> ``(k,)``; NaN when the spread is 0.
    Images with a non-finite embedding are left out.
    """
    X = np.asarray(clean_emb, dtype=float)
    E = np.asarray(emb_by_severity, dtype=float)
    keep = np.isfinite(X).all(axis=1) & np.isfinite(E).all(axis=(0, 2))
    dist, disp = _distances(X[keep], E[:, keep])
    s = float(dist.mean()) if dist.size else 0.0
    return disp.mean(axis=1) / s if s > 0 else np.full(E.shape[0], np.nan)


def embedding_consistency(clean_emb, emb_by_severity, *, tolerance: float, alpha: float = 0.05,
                          family_size: float = 1, min_images: int = 5, seed: int = 0,
                          resamples: int = 2000, shrink_margin: float = 0.1, groups=None) -> Verdict:
    """Corrupted embeddings stay near their clean image, and move more as damage grows.

    clean_emb: ``(n, D)``; emb_by_severity: ``(5, n, D)``.
    Relative displacement of image i at severity k: ``||e_k,i - e_clean,i|| / s`` with
    ``s = sqrt(n / (n - 1)) mean_i ||e_clean,i - centroid||``, the typical spread between clean
    images, corrected for the centroid being estimated from the same images (scale-free:
    1.0 = as far as a typical other image, so models of any width compare). The mean at
    severity 1 is a ratio of means (delta-method SE, which accounts for s being estimated):
    fail if significantly > tolerance, pass if its (1 - alpha) upper bound is below it. Guard:
    the mean displacement must not shrink from severity 1 to 5 by more than ``shrink_margin``
    clean spreads (fail only when significantly so; a smaller shrink is immaterial -- e.g. an
    8 x 8-pixel view of a pixelated image can be closer to the original at a block size that
    divides the view than at a milder one). statistic = mean relative displacement at severity 1.
    """
    X = np.asarray(clean_emb, dtype=float)
    E = np.asarray(emb_by_severity, dtype=float)
    if X.ndim != 2 or E.ndim != 3 or E.shape[0] != 5 or E.shape[1:] != X.shape:
        raise ValueError(f"expected clean (n, D) and by-severity (5, n, D), got {X.shape} and {E.shape}")
    tol = float(tolerance)
    threshold = f"displacement_sev1 <= {tol:g} (x clean spread), sev5 >= sev1 - {shrink_margin:g}"
    keep = np.isfinite(X).all(axis=1) & np.isfinite(E).all(axis=(0, 2))
    dropped = int(keep.size - keep.sum())
    codes = stats.group_codes(groups, keep.size)[keep]
    X, E = X[keep], E[:, keep]
    n_img = X.shape[0]
    n, grp = _units(codes)
    if n_img < 3 or n < 2:
        return _undecidable(threshold, n, dropped, "fewer than 3 embedded images (or 2 groups)", min_images, n_img)
    dist, disp = _distances(X, E)
    s = float(dist.mean())
    if s <= 0:
        return _undecidable(threshold, n, dropped, "all clean embeddings are identical, so their spread is 0",
                            min_images, n_img)
    q1, psi1 = stats.ratio_of_means(disp[0], dist)
    q1 = float(q1)
    fam = family_size * 2
    d1 = stats.band_decision(q1, float(stats.standard_error(psi1, grp)), n, upper=tol, alpha=alpha,
                             family_size=fam, min_images=min_images)
    grow = (disp[4] - disp[0]) / s
    g = float(grow.mean())
    d_mono = stats.band_decision(g, float(stats.standard_error(grow, grp)), n, lower=-float(shrink_margin),
                                 alpha=alpha, family_size=fam, min_images=min_images, can_pass=False)
    outcome, p, n_needed = stats.combine([d1, d_mono])
    m5 = float(disp[4].mean() / s)
    txt = (f"mean displacement at severity 1 {q1:.3f} x spread ({_bounds_txt(d1, alpha)}), "
           f"at severity 5 {m5:.3f}")
    nt = _n_txt(n, n_img)
    if outcome == PASS:
        reason = f"{txt}: within {threshold} ({nt})."
    elif outcome == FAIL:
        what = "too far" if d1.outcome == FAIL else "shrinks with severity"
        reason = f"{txt}: {what}, Bonferroni-adjusted p={p:.2g} ({nt})."
    else:
        short = f"only {nt}, below min_images={min_images}; " if n < min_images else ""
        unit = "images" if n == n_img else "groups of images"
        reason = f"{txt}: undecided against {tol:g}, {short}about {n_needed} {unit} would decide."
    return Verdict(outcome, q1, d1.bound_low, d1.bound_high, p, threshold, n, reason,
                   n_needed=n_needed if outcome == INCONCLUSIVE else None,
                   ref_mean=s, cond_mean=m5, n_dropped=dropped, n_images=n_img)


def published_displacement(clean_emb, emb_by_severity) -> float:
    """The paper's unnormalised displacement: L2(centroid(clean), centroid(all severities pooled)).

    clean_emb: ``(n, D)``; emb_by_severity: ``(k, n, D)`` (or any ``(..., D)``). Non-finite rows
    are ignored. Not comparable across models (depends on the embedding scale).
    """
    X = np.asarray(clean_emb, dtype=float)
    E = np.asarray(emb_by_severity, dtype=float)
    D = X.shape[-1]
    X = X.reshape(-1, D)
    E = E.reshape(-1, D)
    X = X[np.isfinite(X).all(axis=1)]
    E = E[np.isfinite(E).all(axis=1)]
    if X.shape[0] == 0 or E.shape[0] == 0:
        return nan
    return float(np.linalg.norm(X.mean(axis=0) - E.mean(axis=0)))


def displacement_score_correlation(displacements, score_changes, seed: int = 0,
                                   resamples: int = 2000) -> tuple[float, float, float]:
    """Spearman rho between displacement and score change over k cells, with a bootstrap 95 % CI.

    displacements, score_changes: ``(k,)`` (e.g. one entry per corruption x severity). NaN pairs
    dropped. Returns (rho, ci_low, ci_high); NaN when fewer than 3 pairs or a side is constant.
    """
    from scipy.stats import rankdata

    (x, y), _ = stats.drop_nan_pairs(displacements, score_changes)
    k = x.size
    if k < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return nan, nan, nan

    def _rows_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a - a.mean(axis=-1, keepdims=True)
        b = b - b.mean(axis=-1, keepdims=True)
        den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(-1) / den

    rho = float(_rows_corr(rankdata(x), rankdata(y)))
    idx = stats.bootstrap_indices(k, resamples, seed)
    rb = _rows_corr(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))
    lo, hi = stats.percentile_ci(rb)
    return rho, lo, hi


# --------------------------------------------------------------------------- deterministic checks


def repeatability(first, second, *, tolerance: float, alpha: float = 0.05, family_size: float = 1,
                  min_images: int = 5, seed: int = 0, resamples: int = 2000, groups=None) -> Verdict:
    """The same request twice must give the same score: max |first - second| <= tolerance.

    Deterministic, not statistical: one differing image fails. A NaN on one side only counts
    as a difference (inf); images NaN on both sides are dropped. ci = [max diff, max diff].
    Fewer than min_images compared images and no difference: inconclusive. ``groups`` is
    accepted for a uniform call and not needed: no image is treated as a sample of another.
    """
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"repeatability arrays differ in shape: {a.shape} != {b.shape}")
    fa, fb = np.isfinite(a), np.isfinite(b)
    both_nan = ~fa & ~fb
    dropped = int(both_nan.sum())
    use = ~both_nan
    n = int(use.sum())
    tol = float(tolerance)
    threshold = f"max |difference| <= {tol:g}"
    if n == 0:
        return _undecidable(threshold, 0, dropped, "no repeated pair has a score", min_images)
    diff = np.where(fa & fb, np.abs(a - b), np.inf)[use]
    mx = float(diff.max())
    n_bad = int((diff > tol).sum())
    means = dict(ref_mean=float(np.nanmean(a[use])) if fa[use].any() else nan,
                 cond_mean=float(np.nanmean(b[use])) if fb[use].any() else nan, n_images=n)
    if n_bad:
        return Verdict(FAIL, mx, mx, mx, nan, threshold, n,
                       f"{n_bad} of {n} repeated requests changed score (max difference {mx:.3g}).",
                       n_dropped=dropped, **means)
    if n < min_images:
        return Verdict(INCONCLUSIVE, mx, mx, mx, nan, threshold, n,
                       f"all {n} repeated requests agree (max difference {mx:.3g}) but n is below "
                       f"min_images={min_images}; {min_images} images would decide.",
                       n_needed=min_images, n_dropped=dropped, **means)
    return Verdict(PASS, mx, mx, mx, nan, threshold, n,
                   f"all {n} repeated requests agree within {tol:g} (max difference {mx:.3g}).",
                   n_dropped=dropped, **means)


def _rate_part(k: float, n: int, limit: float, alpha: float, fam: float, min_images: int) -> stats.Decision:
    """Decide rate <= limit from k events in n units (exact binomial; k may be fractional when a
    unit is a group whose share of failed requests is in [0, 1]).
    bound_low / bound_high: the (1 - 2 alpha) Clopper-Pearson interval."""
    if n == 0:
        return stats.Decision(INCONCLUSIVE, nan, nan, nan, max(2, min_images))
    rate = k / n
    p = stats.bonferroni(stats.binom_sf_ge(k, n, limit), fam) if rate > limit else 1.0
    lower, upper = stats.clopper_pearson(k, n, 1.0 - 2.0 * alpha)
    if limit <= 0:
        outcome = FAIL if k > 0 else PASS
        p = 0.0 if k > 0 else 1.0
    elif rate > limit and p < alpha:
        outcome = FAIL
    elif upper <= limit:
        outcome = PASS
    else:
        outcome = INCONCLUSIVE
    if outcome != FAIL and n < min_images:
        outcome = INCONCLUSIVE
    need = None
    if outcome == INCONCLUSIVE:  # the same exact rule at the observed rate, over m units
        floor = max(2, min_images)
        if limit <= 0:  # deterministic part, undecided only for want of min_images
            need = floor
        elif rate < limit:
            need = stats.smallest_n(lambda m: stats.clopper_pearson_upper(rate * m, m, alpha) <= limit, floor)
        elif rate > limit:
            need = stats.smallest_n(
                lambda m: stats.bonferroni(stats.binom_sf_ge(rate * m, m, limit), fam) < alpha, floor)
        else:
            need = stats.N_CAP
    return stats.Decision(outcome, p, lower, upper, need)


def _unit_events(events: np.ndarray, codes: np.ndarray) -> tuple[float, float, int]:
    """Per-request events (m,) bool in units (m,) -> (k, n_eff, units): the events and trials of
    an effective binomial sample. Its size is the number of requests divided by the design
    effect (the variance of the rate estimated over units, against the binomial variance of the
    requests), kept between the number of units (every unit's requests fail or pass together)
    and the number of requests (failures independent of the image); the number of units when the
    rate is 0 or 1, where the units cannot show how their requests cluster."""
    if events.size == 0:
        return 0.0, 0.0, 0
    _, inv = np.unique(codes, return_inverse=True)
    shares = np.bincount(inv, weights=events.astype(float)) / np.bincount(inv)
    units, requests, rate = int(shares.size), int(events.size), float(shares.mean())
    n_eff = float(units)
    if units >= 2 and 0.0 < rate < 1.0:
        v_units = float(shares.var(ddof=1)) / units
        v_requests = rate * (1.0 - rate) / requests
        n_eff = float(requests) if v_units <= 0 else min(float(requests), max(float(units), requests * v_requests / v_units))
    return rate * n_eff, n_eff, units


def output_validity(parse_ok, scores, *, max_parse_failure_rate: float, max_out_of_range_rate: float,
                    alpha: float = 0.05, family_size: float = 1, min_images: int = 5, seed: int = 0,
                    resamples: int = 2000, groups=None) -> Verdict:
    """Answers must parse, and parsed scores must lie on the 1..5 scale.

    parse_ok: ``(m,)`` bool per request; scores: ``(m,)`` (NaN where unparsed or failed);
    groups: ``(m,)`` the image (or group of images) each request shows. The requests of one
    image are not independent trials (an image the judge cannot read fails all its prompts), so
    the unit is the group: each contributes its share of failed requests, k = sum of shares over
    n = number of groups. Without groups every request is its own unit (only right for requests
    on distinct images). A request with parse_ok=False or a NaN score counts as a parse failure;
    a finite score outside [1, 5] counts as out of range (over the parsed answers). Per rate:
    fail when the rate exceeds the limit and an exact one-sided binomial test rejects
    rate <= limit at alpha / (2 * family_size); pass when the one-sided (1 - alpha)
    Clopper-Pearson upper bound is <= the limit (both with fractional k, the usual
    conservative treatment of shares in [0, 1]). Limit 0 is deterministic: any out-of-range
    answer fails, none passes. statistic = parse-failure rate in % (mean share per unit),
    CI = its (1 - 2 alpha) Clopper-Pearson interval in %, whose upper end is the pass bound.
    """
    ok = np.asarray(parse_ok, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if ok.shape != s.shape:
        raise ValueError(f"parse_ok and scores differ in shape: {ok.shape} != {s.shape}")
    m = int(ok.size)
    codes = stats.group_codes(groups, m)
    parsed = ok & np.isfinite(s)
    k_pf, n_pf, n = _unit_events(~parsed, codes)
    oor = (s < 1.0) | (s > 5.0)
    k_oor, n_p, _ = _unit_events(oor[parsed], codes[parsed])
    m_pf, m_p, m_oor = int(m - parsed.sum()), int(parsed.sum()), int(oor[parsed].sum())
    lpf, loor = float(max_parse_failure_rate), float(max_out_of_range_rate)
    threshold = f"parse failures <= {lpf * 100:g}%, out-of-range <= {loor * 100:g}%"
    fam = family_size * 2
    d_pf = _rate_part(k_pf, n_pf, lpf, alpha, fam, min_images)
    d_oor = _rate_part(k_oor, n_p, loor, alpha, fam, min_images)
    outcome, p, n_needed = stats.combine([d_pf, d_oor])
    if n_needed is not None and n_pf > n:  # effective trials -> units, at the same design effect
        n_needed = math.ceil(n_needed * n / n_pf)
    if outcome == PASS and n < min_images:  # a pass needs min_images units, however many requests
        outcome, n_needed = INCONCLUSIVE, max(2, min_images)
    rate = 100.0 * k_pf / n_pf if n_pf else nan
    unit = "requests" if n == m else "images (or groups)"
    txt = f"{m_pf}/{m} unparsed ({rate:.1f}% per {unit[:-1]}), {m_oor}/{m_p} out of range, over {n} {unit}"
    if outcome == PASS:
        reason = f"{txt}: within {threshold} (upper bounds {d_pf.bound_high:.3f}, {d_oor.bound_high:.3f})."
    elif outcome == FAIL:
        reason = f"{txt}: violates {threshold}, Bonferroni-adjusted p={p:.2g}."
    else:
        reason = f"{txt}: undecided against {threshold}; about {n_needed} {unit} would decide."
    return Verdict(outcome, rate, d_pf.bound_low * 100.0, d_pf.bound_high * 100.0, p, threshold, n, reason,
                   n_needed=n_needed if outcome == INCONCLUSIVE else None,
                   cond_mean=float(s[parsed].mean()) if m_p else nan, n_dropped=0,
                   n_images=n)


# --------------------------------------------------------------------------- baseline (upgrade gate)


def baseline_agreement(new, old, *, min_r: float, alpha: float = 0.05, family_size: float = 1,
                       min_images: int = 5, seed: int = 0, resamples: int = 2000, groups=None) -> Verdict:
    """The new model's per-image scores must correlate with the baseline's: Pearson r >= min_r.

    new, old: ``(n,)`` paired by image (NaN pairs dropped). Fisher z with SE 1/sqrt(n - 3):
    pass when the one-sided (1 - alpha) lower bound >= min_r; fail when the one-sided upper bound
    at alpha / family_size is < min_r; else inconclusive. CI = Fisher-z (1 - 2 alpha) interval
    (its lower end is the pass bound). With groups, r is still over images but the Fisher SE
    uses the number of groups, 1/sqrt(G - 3) (images of one group are not independent pairs).
    A constant side leaves r undefined: inconclusive.
    """
    x0 = np.asarray(new, dtype=float)
    (x, y, codes), dropped = stats.drop_nan_pairs(x0, old, stats.group_codes(groups, x0.shape[-1]))
    n_img = x.size
    n = stats.n_groups(codes)
    mr = float(min_r)
    threshold = f"r >= {mr:g}"
    means = dict(ref_mean=float(y.mean()) if n else nan, cond_mean=float(x.mean()) if n else nan, n_images=n_img)
    if n < 4:
        return _undecidable(threshold, n, dropped, "fewer than 4 paired scores (or groups)", max(min_images, 4),
                            **means)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        side = "new" if np.ptp(x) == 0 else "baseline"
        return Verdict(INCONCLUSIVE, nan, nan, nan, nan, threshold, n,
                       f"the {side} scores are constant over the {n} images, so Pearson r is undefined.",
                       n_needed=None, n_dropped=dropped, **means)
    xc, yc = x - x.mean(), y - y.mean()
    r = float(np.clip((xc @ yc) / math.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))
    z, zmin = stats.fisher_z(r), stats.fisher_z(mr)
    se = 1.0 / math.sqrt(n - 3)
    fam = max(1, int(family_size))
    lower_pass = math.tanh(z - stats.z_ppf(1 - alpha) * se)
    upper_fail = math.tanh(z + stats.z_ppf(1 - alpha / fam) * se)
    p = stats.bonferroni(stats.z_cdf((z - zmin) / se), fam)
    lo, hi = stats.fisher_ci(r, n, 1.0 - 2.0 * alpha)
    if upper_fail < mr:
        outcome = FAIL
    elif lower_pass >= mr and n >= min_images:
        outcome = PASS
    else:
        outcome = INCONCLUSIVE
    need = None
    if outcome == INCONCLUSIVE:
        if z > zmin:
            need = 3 + (stats.z_ppf(1 - alpha) / (z - zmin)) ** 2
        elif z < zmin:
            need = 3 + (stats.z_ppf(1 - alpha / fam) / (zmin - z)) ** 2
        else:
            need = math.inf
        need = stats._ceil_n(need, max(4, min_images))
        if need <= n:
            need = n + 1
    if outcome == PASS:
        reason = (f"r={r:.3f}, one-sided {100 * (1 - alpha):g}% lower bound {lower_pass:.3f} >= {mr:g} "
                  f"({_n_txt(n, n_img)}).")
    elif outcome == FAIL:
        reason = (f"r={r:.3f} below {mr:g}: upper bound {upper_fail:.3f}, Bonferroni-adjusted p={p:.2g} "
                  f"({_n_txt(n, n_img)}).")
    else:
        reason = (f"r={r:.3f} (one-sided bounds {lower_pass:.3f}..{upper_fail:.3f}) undecided against {mr:g}; "
                  f"about {need} paired images would decide.")
    return Verdict(outcome, r, lo, hi, p, threshold, n, reason, n_needed=need, n_dropped=dropped, **means)


def baseline_noninferiority(new_ref, new_cond, old_ref, old_cond, *, margin_pct: float, alpha: float = 0.05,
                            family_size: float = 1, min_images: int = 5, seed: int = 0,
                            resamples: int = 2000, groups=None) -> Verdict:
    """The new model may be at most margin_pct (percentage points) less stable than the baseline.

    new_ref, old_ref: ``(n,)``; new_cond, old_cond: ``(n,)`` or ``(k, n)`` (e.g. k severities of one
    corruption), all paired by image (images missing any score dropped). Per image the absolute
    change is averaged over the k conditions, so the image stays the unit of resampling.
    Instability of a model = mean_i |cond_i - ref_i| / mean(ref) * 100. statistic =
    instability(new) - instability(old), with the delta-method SE of a difference of two ratios
    of means over the same images: fail when significantly > margin, pass when the one-sided
    (1 - alpha) upper bound < margin. ref_mean / cond_mean carry the old / new instability (%).
    """
    nr0 = np.asarray(new_ref, dtype=float)
    (nr, nc, orf, oc, codes), dropped = stats.drop_nan_pairs(nr0, new_cond, old_ref, old_cond,
                                                              stats.group_codes(groups, nr0.shape[-1]))
    n = nr.size
    n_units, grp = _units(codes)
    m = float(margin_pct)
    threshold = f"instability(new) - instability(old) <= +{m:g} points"
    if n_units < 2:
        return _undecidable(threshold, n_units, dropped, "fewer than 2 images (or groups) scored by both models",
                            min_images, n)
    if nr.mean() <= 0 or orf.mean() <= 0:
        return Verdict(ERROR, nan, nan, nan, nan, threshold, n_units, "a reference mean is <= 0: percentages undefined.",
                       n_dropped=dropped, n_images=n)
    a_new = np.abs(nc - nr).reshape(-1, n).mean(axis=0)
    a_old = np.abs(oc - orf).reshape(-1, n).mean(axis=0)
    q_new, psi_new = stats.ratio_of_means(a_new, nr)
    q_old, psi_old = stats.ratio_of_means(a_old, orf)
    est = float(q_new - q_old) * 100.0
    psi = (psi_new - psi_old) * 100.0
    d = stats.band_decision(est, float(stats.standard_error(psi, grp)), n_units, upper=m, alpha=alpha,
                            family_size=family_size, min_images=min_images)
    reason = _reason(d.outcome, "extra instability", f"{est:+.2f} points (new {q_new * 100:.2f}%, old {q_old * 100:.2f}%)",
                     _bounds_txt(d, alpha), threshold, d.p_value, n_units, d.n_needed, min_images, n)
    return Verdict(d.outcome, est, d.bound_low, d.bound_high, d.p_value, threshold, n_units, reason,
                   n_needed=d.n_needed if d.outcome == INCONCLUSIVE else None,
                   ref_mean=float(q_old) * 100.0, cond_mean=float(q_new) * 100.0, n_dropped=dropped, n_images=n)


def family_correlation(scores_by_model: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Pairwise Pearson r of per-image scores between models (the published same-family number).

    scores_by_model: model -> ``(n,)`` scores over the same images in the same order.
    Each pair uses the images both models scored; NaN when fewer than 3 or a side is constant.
    Returns (model names in input order, ``(m, m)`` symmetric matrix).
    """
    models = list(scores_by_model)
    m = len(models)
    arr = [np.asarray(scores_by_model[k], dtype=float) for k in models]
    out = np.full((m, m), nan)
    for i in range(m):
        for j in range(i, m):
            (x, y), _ = stats.drop_nan_pairs(arr[i], arr[j])
            if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
                continue
            xc, yc = x - x.mean(), y - y.mean()
            r = float(np.clip((xc @ yc) / math.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))
            out[i, j] = out[j, i] = r
    return models, out
