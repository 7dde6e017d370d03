"""Wording of the instruction."""


def test_paraphrase_invariance(miqa_cell, miqa_check):
    """The same instruction in other words gives the same score within the tolerance."""
    miqa_check(miqa_cell)
