"""Corruption robustness: every audited corruption (the conditions registry, per modality) x severity."""

from __future__ import annotations

from ..requests import CLEAN, SEVERITIES, RequestSpec, condition_id
from .base import CONDITION, Cell, define, each_corruption, profile_key


def series(cell: Cell, *, embed: bool = False) -> list[RequestSpec]:
    """Clean, then the cell's corruption at each of its severities."""
    from ..conditions import REGISTRY

    levels = REGISTRY[cell.corruption].severities if cell.corruption in REGISTRY else SEVERITIES
    return [RequestSpec(CLEAN, embed=embed), *(RequestSpec(condition_id(cell.corruption, s), embed=embed) for s in levels)]


def embedded_series(cell: Cell) -> list[RequestSpec]:
    """:func:`series`, with the image embeddings."""
    return series(cell, embed=True)


@define(
    cells=each_corruption(severity=True),
    requests=[CLEAN, CONDITION],
    tolerance=profile_key(
        "stability_tolerance_pct",
        why="mild corruption must not move the score more than a rater's rounding error (+-10 % is half a "
            "level at a mean of 5); heavier damage may move it more, so the band widens with severity"),
    varies="corruption x severity",
)
def corruption_stability(miqa):
    """The mean score under a corruption stays within the tolerance of the clean score (two-sided)."""
    miqa.assert_change_within(miqa.condition, miqa.clean, pct=miqa.tolerance)


@define(
    cells=each_corruption(severity=False, full_series=True),
    requests=series,
    tolerance={
        "trend_pct": profile_key("trend_tolerance_pct", why="the mean score may not rise by more than this per severity step"),
        "fall_pct": profile_key("fall_required_pct",
                                why="a judge must notice heavy damage; which corruptions, and why: profiles.FALL_REQUIRED_REASONS"),
    },
    varies="corruption",
)
def severity_response(miqa):
    """The score does not rise as severity rises, and falls by the required minimum at severity 5."""
    miqa.assert_falls_with_severity(trend_pct=miqa.tolerance["trend_pct"], fall_pct=miqa.tolerance["fall_pct"])


@define(
    cells=each_corruption(severity=True),
    requests=[CLEAN, CONDITION],
    tolerance=profile_key("inflation_tolerance_pct",
                          why="a worse image may never score higher than its clean original by more than this"),
    varies="corruption x severity",
)
def no_inflation(miqa):
    """A corrupted image never scores higher than its clean original beyond the tolerance (one-sided)."""
    miqa.assert_no_rise(miqa.condition, miqa.clean, pct=miqa.tolerance)
