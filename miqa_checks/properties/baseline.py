"""Upgrade gate: only with ``--miqa-baseline <scores.csv of the model in production>``."""

from __future__ import annotations

from ..conditions import AUDIT_SETS
from .base import define, each_corruption, once, profile_key
from .corruption import series
from .reliability import every_condition


@define(
    cells=once,
    requests=every_condition,
    tolerance=profile_key("baseline_min_correlation",
                          why="the low end of the published same-family correlation range"),
    varies="- (needs --miqa-baseline)",
    needs_baseline=True,
)
def baseline_agreement(miqa):
    """Per-image scores correlate with the baseline's at least as much as the profile requires."""
    miqa.assert_agrees_with_baseline(min_r=miqa.tolerance)


@define(
    cells=each_corruption(severity=False, sets=AUDIT_SETS, full_series=True),
    requests=series,
    tolerance=profile_key("baseline_margin_pct",
                          why="the extra instability a new model may show against the baseline, paired by image"),
    varies="corruption (needs --miqa-baseline)",
    needs_baseline=True,
)
def baseline_noninferiority(miqa):
    """No corruption makes the new model less stable than the baseline by more than the margin."""
    miqa.assert_noninferior_to_baseline(margin_pct=miqa.tolerance)
