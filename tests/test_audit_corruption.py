"""Corruption robustness: seven corruptions x five severities (ImageNet-C definitions)."""


def test_corruption_stability(miqa_cell, miqa_check):
    """The mean score under a corruption stays within the profile's tolerance of the clean score.

    The privacy view: pixelating an image must not change the clinical verdict on its quality.
    """
    miqa_check(miqa_cell)


def test_severity_response(miqa_cell, miqa_check):
    """The score does not rise as severity rises, and falls by the required minimum at severity 5."""
    miqa_check(miqa_cell)


def test_no_inflation(miqa_cell, miqa_check):
    """A corrupted image never scores higher than its clean original beyond the tolerance."""
    miqa_check(miqa_cell)
