"""The judge's internal representation of an image under corruption."""


def test_embedding_consistency(miqa_cell, miqa_check):
    """Relative embedding displacement stays under the tolerance at severity 1 and grows with severity."""
    miqa_check(miqa_cell)
