"""Upgrade gate: only with ``--miqa-baseline <scores.csv of the model in production>``."""


def test_baseline_agreement(miqa_cell, miqa_check):
    """Per-image scores correlate with the baseline's at least as much as the profile requires."""
    miqa_check(miqa_cell)


def test_baseline_noninferiority(miqa_cell, miqa_check):
    """No corruption makes the new model less stable than the baseline by more than the margin."""
    miqa_check(miqa_cell)
