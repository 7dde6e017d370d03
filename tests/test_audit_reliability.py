"""Repeatability and output validity."""

from miqa_checks import CLEAN, audit, once, request
from miqa_checks.properties.reliability import every_condition


@audit(cells=once, requests=[CLEAN, request(repeat=1)], tolerance="repeatability_tolerance")
def test_repeatability(miqa):
    """The same request twice (the second alone in a batch of one) gives the same score within 1e-3 points."""
    first, again = miqa.requests
    miqa.assert_repeatable(first, again, tolerance=miqa.tolerance)


@audit(cells=once, requests=every_condition,
       tolerance={"max_parse_failure_rate": "max_parse_failure_rate", "max_out_of_range_rate": "max_out_of_range_rate"})
def test_output_validity(miqa):
    """At most 5 % unparseable answers and none out of range, over clean and every condition."""
    miqa.assert_valid_outputs(**miqa.tolerance)
