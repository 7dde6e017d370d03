"""Corruption robustness: each audited corruption x its five severities (ImageNet-C definitions).

Each test declares its cells (the conditions registry's corruptions for the dataset's modality),
the requests each cell needs per image, its tolerance (a profile key: config and ``--miqa-profile``
set it; a number here overrides it for this test) and its assertion. Copy a test under a new name
to declare a new property; the reasons for each tolerance are in miqa_checks/properties/.
"""

from miqa_checks import CLEAN, CONDITION, audit, each_corruption
from miqa_checks.properties.corruption import series


@audit(cells=each_corruption(), requests=[CLEAN, CONDITION], tolerance="stability_tolerance_pct")
def test_corruption_stability(miqa):
    """The mean score under a corruption stays within +-10, 10, 15, 20, 25 % (by severity) of the clean score.

    The privacy view: pixelating an image must not change the clinical verdict on its quality.
    """
    miqa.assert_change_within(miqa.condition, miqa.clean, pct=miqa.tolerance)


@audit(cells=each_corruption(severity=False, full_series=True), requests=series,
       tolerance={"trend_pct": "trend_tolerance_pct", "fall_pct": "fall_required_pct"})
def test_severity_response(miqa):
    """The score does not rise by more than 1 %/step as severity rises, and falls by at least 5 % at severity 5
    (for the corruptions that remove what a rater grades)."""
    miqa.assert_falls_with_severity(trend_pct=miqa.tolerance["trend_pct"], fall_pct=miqa.tolerance["fall_pct"])


@audit(cells=each_corruption(), requests=[CLEAN, CONDITION], tolerance="inflation_tolerance_pct")
def test_no_inflation(miqa):
    """A corrupted image never scores higher than its clean original by more than 5 % (one-sided)."""
    miqa.assert_no_rise(miqa.condition, miqa.clean, pct=miqa.tolerance)
