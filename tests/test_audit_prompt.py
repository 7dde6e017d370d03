"""Wording of the instruction."""

from miqa_checks import CLEAN, audit, each, request
from miqa_checks.prompts import PARAPHRASES


@audit(cells=each(variant=PARAPHRASES), requests=[CLEAN, request(prompt="{variant}")],
       tolerance="paraphrase_tolerance_pct")
def test_paraphrase_invariance(miqa):
    """The same instruction in other words gives the same score within +-10 %."""
    base, reworded = miqa.requests
    miqa.assert_change_within(reworded, base, pct=miqa.tolerance)
