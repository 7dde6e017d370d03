"""Upgrade gate: only with ``--miqa-baseline <scores.csv of the model in production>``."""

from miqa_checks import audit, each_corruption, once
from miqa_checks.conditions import AUDIT_SETS
from miqa_checks.properties.corruption import series
from miqa_checks.properties.reliability import every_condition


@audit(cells=once, requests=every_condition, tolerance="baseline_min_correlation")
def test_baseline_agreement(miqa):
    """Per-image scores correlate with the baseline's at least r = 0.67."""
    miqa.assert_agrees_with_baseline(min_r=miqa.tolerance)


@audit(cells=each_corruption(severity=False, sets=AUDIT_SETS, full_series=True), requests=series,
       tolerance="baseline_margin_pct")
def test_baseline_noninferiority(miqa):
    """No corruption makes the new model less stable than the baseline by more than 5 %."""
    miqa.assert_noninferior_to_baseline(margin_pct=miqa.tolerance)
