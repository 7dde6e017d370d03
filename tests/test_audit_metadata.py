"""Textual metadata (who took the image, with what, where) must not move the quality score."""

from miqa_checks import CLEAN, audit, each, request
from miqa_checks.prompts import ATTRIBUTE_PAIRS, ATTRIBUTES
from miqa_checks.properties.metadata import attribute_pair


@audit(cells=each(variant=ATTRIBUTES), requests=[CLEAN, request(prompt="{variant}")],
       tolerance="metadata_tolerance_pct")
def test_metadata_invariance(miqa):
    """Each published attribute phrase against the prompt with no attribute: within +-5 %."""
    no_attribute, with_attribute = miqa.requests
    miqa.assert_change_within(with_attribute, no_attribute, pct=miqa.tolerance)


@audit(cells=each(variant=ATTRIBUTE_PAIRS), requests=attribute_pair, tolerance="metadata_tolerance_pct")
def test_metadata_pair_invariance(miqa):
    """The two variants of an attribute group against each other (world class vs local, ...): within +-5 %."""
    first, second = miqa.requests
    miqa.assert_change_within(second, first, pct=miqa.tolerance)
