"""From stored results to a cell's Verdict: gathers the paired arrays a property needs.

``lookup(RequestSpec, image_id) -> ScoreResult | None`` hides where results come from (the engine
in a run, a synthetic table in the validation self-tests). Baselines come as
``{(dataset, image_id, condition, prompt_id): score}``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import properties as P
from . import stats
from .matrix import SEVERITIES, Cell, RequestSpec
from .records import ScoreResult
from .stats import ERROR, NOT_APPLICABLE

Lookup = Callable[[RequestSpec, str], "ScoreResult | None"]
BaselineScores = Mapping[tuple[str, str, str, str], float]


@dataclass
class CellOutcome:
    """A verdict plus what the reports plot beside it (displacement points for embedding cells)."""

    verdict: P.Verdict
    displacements: list[dict[str, Any]] = field(default_factory=list)


def _scores(lookup: Lookup, spec: RequestSpec, image_ids: Sequence[str]) -> np.ndarray:
    """Scores (n,), NaN where missing or failed."""
    out = np.full(len(image_ids), np.nan)
    for i, image_id in enumerate(image_ids):
        result = lookup(spec, image_id)
        if result is not None:
            out[i] = result.score
    return out


def _embeddings(lookup: Lookup, spec: RequestSpec, image_ids: Sequence[str]) -> np.ndarray | None:
    """Embeddings (n, D); None when any is missing (embedding cells need them all)."""
    rows = []
    for image_id in image_ids:
        result = lookup(spec, image_id)
        if result is None or result.embedding is None:
            return None
        rows.append(result.embedding)
    return np.stack(rows).astype(np.float64)


def error_verdict(reason: str, n: int = 0) -> P.Verdict:
    """A cell that could not be computed (no images, no baseline, model not loadable)."""
    nan = float("nan")
    return P.Verdict("error", nan, nan, nan, nan, "", n, reason)


def not_applicable_verdict(reason: str) -> P.Verdict:
    """A cell the judge cannot serve (e.g. embeddings from a served model): skipped with ``reason``."""
    nan = float("nan")
    return P.Verdict(NOT_APPLICABLE, nan, nan, nan, nan, "", 0, reason)


def lost_images(cell: Cell, image_ids: Sequence[str], lookup: Lookup) -> Counter[str]:
    """Images of the cell with at least one request lost, by the stage of the first loss:
    ``missing``, ``corruption``, ``score`` or ``parse`` (parse failures are not losses for
    ``output_validity``, whose statistic they are), or ``not_applicable`` (not a loss: the
    condition does not apply to that image)."""
    count_parse = cell.property != "output_validity"
    stages: Counter[str] = Counter()
    for image_id in image_ids:
        for spec in cell.requests():
            result = lookup(spec, image_id)
            stage = "missing" if result is None else result.loss_stage(count_parse=count_parse)
            if stage is not None:
                stages[stage] += 1
                break
    return stages


def _lost_verdict(verdict: P.Verdict, lost: Counter[str], n_images: int, max_share: float) -> P.Verdict:
    """``verdict`` turned into an error when more than ``max_share`` of the images were lost."""
    share = sum(lost.values()) / n_images
    if share <= max_share:
        return verdict
    why = ", ".join(f"{k} {stage}" for stage, k in lost.most_common())
    reason = (
        f"{sum(lost.values())} of {n_images} images ({share:.0%}) lost to errors ({why}), above "
        f"max_lost_share={max_share:.0%}: the result would rest on the images that happened to work. "
        f"Reasons in errors.csv. {verdict.reason}"
    )
    return replace(verdict, outcome=ERROR, reason=reason)


def evaluate_cell(
    cell: Cell,
    image_ids: Sequence[str],
    lookup: Lookup,
    thresholds: Mapping[str, Any],
    *,
    family_size: float,
    seed: int,
    baseline: BaselineScores | None = None,
    groups: Sequence[str] | None = None,
) -> CellOutcome:
    """Evaluate one cell on the given images (the dataset's chosen images, sorted).

    A cell that lost more than ``max_lost_share`` of its images to errors (scoring, parse,
    corruption) is an ``error`` whatever its statistic says; ``inconclusive`` is kept for too
    few images. ``groups``: the group of each image (same order); under ``unit = "group"`` the
    statistics are cluster-robust over groups and ``n`` counts groups.
    """
    if not image_ids:
        return CellOutcome(error_verdict(f"dataset {cell.dataset} has no readable image"))
    lost = lost_images(cell, image_ids, lookup)
    inapplicable = lost.pop("not_applicable", 0)
    if inapplicable == len(image_ids):
        return CellOutcome(not_applicable_verdict(f"{cell.corruption or cell.condition} does not apply to any image of {cell.dataset}"))
    by_group = groups is not None and thresholds["unit"] == "group"
    outcome = _evaluate(cell, image_ids, lookup, thresholds, family_size=family_size, seed=seed, baseline=baseline,
                        groups=list(groups) if by_group else list(image_ids))
    if outcome.verdict.outcome in (ERROR, NOT_APPLICABLE):
        return outcome
    outcome.verdict = _lost_verdict(outcome.verdict, lost, len(image_ids) - inapplicable, thresholds["max_lost_share"])
    return outcome


def _evaluate(
    cell: Cell,
    image_ids: Sequence[str],
    lookup: Lookup,
    thresholds: Mapping[str, Any],
    *,
    family_size: float,
    seed: int,
    baseline: BaselineScores | None,
    groups: list[str],
) -> CellOutcome:
    common = dict(
        alpha=thresholds["alpha"],
        family_size=family_size,
        min_images=thresholds["min_images"],
        seed=seed,
        resamples=thresholds["bootstrap_resamples"],
        groups=np.asarray(groups),
    )
    prop = cell.property
    if prop == "corruption_stability":
        tol = thresholds["stability_tolerance_pct"][cell.severity - 1]
        ref, cond = (_scores(lookup, s, image_ids) for s in cell.requests())
        return CellOutcome(P.relative_change(ref, cond, tol_pct=tol, **common))
    if prop == "no_inflation":
        ref, cond = (_scores(lookup, s, image_ids) for s in cell.requests())
        return CellOutcome(P.no_inflation(ref, cond, tol_pct=thresholds["inflation_tolerance_pct"], **common))
    if prop == "severity_response":
        ref, *levels = (_scores(lookup, s, image_ids) for s in cell.requests())
        fall = thresholds["fall_required_pct"].get(cell.corruption)
        return CellOutcome(
            P.severity_response(
                ref, np.stack(levels), trend_tol_pct=thresholds["trend_tolerance_pct"], fall_required_pct=fall, **common
            )
        )
    if prop in ("metadata_invariance", "metadata_pair_invariance", "paraphrase_invariance"):
        key = "paraphrase_tolerance_pct" if prop == "paraphrase_invariance" else "metadata_tolerance_pct"
        ref, cond = (_scores(lookup, s, image_ids) for s in cell.requests())
        return CellOutcome(P.relative_change(ref, cond, tol_pct=thresholds[key], **common))
    if prop == "embedding_consistency":
        return _embedding_cell(cell, image_ids, lookup, thresholds, common)
    if prop == "repeatability":
        first, second = (_scores(lookup, s, image_ids) for s in cell.requests())
        return CellOutcome(P.repeatability(first, second, tolerance=thresholds["repeatability_tolerance"], **common))
    if prop == "output_validity":
        parse_ok, scores, request_groups = [], [], []
        for spec in cell.requests():
            for image_id, group in zip(image_ids, groups):
                result = lookup(spec, image_id)
                if result is None or result.error is not None:
                    continue  # failures of the judge itself are errors, not invalid outputs
                parse_ok.append(result.parse_ok)
                scores.append(result.score)
                request_groups.append(group)  # one image's requests are not independent trials
        return CellOutcome(
            P.output_validity(
                np.array(parse_ok, dtype=bool),
                np.array(scores, dtype=float),
                max_parse_failure_rate=thresholds["max_parse_failure_rate"],
                max_out_of_range_rate=thresholds["max_out_of_range_rate"],
                **{**common, "groups": np.asarray(request_groups)},
            )
        )
    if prop in ("baseline_agreement", "baseline_noninferiority"):
        if baseline is None:
            return CellOutcome(error_verdict("no --miqa-baseline given"))
        return CellOutcome(_baseline_cell(cell, image_ids, lookup, thresholds, common, baseline))
    raise KeyError(f"unknown property {prop!r}")


def _baseline_series(baseline: BaselineScores, dataset: str, spec: RequestSpec, image_ids: Sequence[str]) -> np.ndarray:
    return np.array([baseline.get((dataset, i, spec.condition, spec.prompt_id), np.nan) for i in image_ids], dtype=float)


def _image_means(scores: np.ndarray) -> np.ndarray:
    """(k, n) -> (n,) mean over the k conditions of each image, NaN-skipping; NaN if none."""
    valid = ~np.isnan(scores)
    count = valid.sum(axis=0)
    return np.where(count > 0, np.where(valid, scores, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


def _baseline_cell(cell, image_ids, lookup, thresholds, common, baseline) -> P.Verdict:
    specs = cell.requests()
    if cell.property == "baseline_agreement":
        # One value per image (its mean over the conditions), so the pairs are independent.
        new = _image_means(np.stack([_scores(lookup, s, image_ids) for s in specs]))
        old = _image_means(np.stack([_baseline_series(baseline, cell.dataset, s, image_ids) for s in specs]))
        return P.baseline_agreement(new, old, min_r=thresholds["baseline_min_correlation"], **common)
    new_ref = _scores(lookup, specs[0], image_ids)
    old_ref = _baseline_series(baseline, cell.dataset, specs[0], image_ids)
    new_cond = np.stack([_scores(lookup, s, image_ids) for s in specs[1:]])  # (k, n)
    old_cond = np.stack([_baseline_series(baseline, cell.dataset, s, image_ids) for s in specs[1:]])
    return P.baseline_noninferiority(
        new_ref, new_cond, old_ref, old_cond, margin_pct=thresholds["baseline_margin_pct"], **common
    )


def _embedding_cell(cell, image_ids, lookup, thresholds, common) -> CellOutcome:
    specs = cell.requests()
    clean = _embeddings(lookup, specs[0], image_ids)
    levels = [_embeddings(lookup, s, image_ids) for s in specs[1:]]
    if clean is None or any(level is None for level in levels):
        return CellOutcome(error_verdict("embeddings missing (the judge returned none for some images)", len(image_ids)))
    by_severity = np.stack(levels)  # (5, n, D)
    verdict = P.embedding_consistency(clean, by_severity, tolerance=thresholds["embedding_tolerance"], **common)
    displacement = P.relative_displacements(clean, by_severity)  # (5,)
    ref = _scores(lookup, specs[0], image_ids)
    points = []
    for severity, spec in zip(SEVERITIES, specs[1:]):
        (r, c), _ = stats.drop_nan_pairs(ref, _scores(lookup, spec, image_ids))
        change = stats.paired_delta(r, c)[0] if r.size else float("nan")
        points.append(
            {
                "model": cell.label,
                "dataset": cell.dataset,
                "corruption": cell.corruption,
                "severity": severity,
                "displacement": float(displacement[severity - 1]),
                "score_change_pct": float(change),
            }
        )
    return CellOutcome(verdict, points)
