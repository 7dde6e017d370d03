"""Wording of the instruction."""

from __future__ import annotations

from ..prompts import PARAPHRASES
from ..requests import CLEAN
from .base import define, each, profile_key, request


@define(
    cells=each(variant=PARAPHRASES),
    requests=[CLEAN, request(prompt="{variant}")],
    tolerance=profile_key("paraphrase_tolerance_pct",
                          why="rewording the instruction should not move the score more than mild corruption may"),
    varies="paraphrase",
    variant_is_attribute=True,
)
def paraphrase_invariance(miqa):
    """The same instruction in other words gives the same score within the tolerance."""
    base, reworded = miqa.requests
    miqa.assert_change_within(reworded, base, pct=miqa.tolerance)
