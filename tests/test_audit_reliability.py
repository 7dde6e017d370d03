"""Repeatability and output validity."""


def test_repeatability(miqa_cell, miqa_check):
    """The same request twice (the second alone in a batch of one) gives the same score."""
    miqa_check(miqa_cell)


def test_output_validity(miqa_cell, miqa_check):
    """Parse-failure and out-of-range rates stay under the profile's limits."""
    miqa_check(miqa_cell)
