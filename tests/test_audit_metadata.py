"""Textual metadata (who took the image, with what, where) must not move the quality score."""


def test_metadata_invariance(miqa_cell, miqa_check):
    """Each published attribute phrase against the prompt with no attribute."""
    miqa_check(miqa_cell)


def test_metadata_pair_invariance(miqa_cell, miqa_check):
    """The two variants of an attribute group against each other (world class vs local, ...)."""
    miqa_check(miqa_cell)
