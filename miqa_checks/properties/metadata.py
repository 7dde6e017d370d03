"""Textual metadata (who took the image, with what, where) must not move the quality score."""

from __future__ import annotations

from ..prompts import ATTRIBUTE_PAIRS, ATTRIBUTES
from ..requests import CLEAN, RequestSpec
from .base import Cell, define, each, profile_key, request

_WHY = "who took the image, and where, says nothing about its pixels: +-5 % (a quarter level)"


@define(
    cells=each(variant=ATTRIBUTES),
    requests=[CLEAN, request(prompt="{variant}")],
    tolerance=profile_key("metadata_tolerance_pct", why=_WHY),
    varies="attribute",
    variant_is_attribute=True,
)
def metadata_invariance(miqa):
    """Each published attribute phrase against the prompt with no attribute."""
    no_attribute, with_attribute = miqa.requests
    miqa.assert_change_within(with_attribute, no_attribute, pct=miqa.tolerance)


def attribute_pair(cell: Cell) -> list[RequestSpec]:
    """The group's two attribute prompts (world class, then local, ...), each on the clean image."""
    first, second = ATTRIBUTE_PAIRS[cell.variant]
    return [RequestSpec(CLEAN, first), RequestSpec(CLEAN, second)]


@define(
    cells=each(variant=ATTRIBUTE_PAIRS),
    requests=attribute_pair,
    tolerance=profile_key("metadata_tolerance_pct", why=_WHY),
    varies="attribute group",
    variant_is_attribute=True,
)
def metadata_pair_invariance(miqa):
    """The two variants of an attribute group against each other (world class vs local, ...)."""
    first, second = miqa.requests
    miqa.assert_change_within(second, first, pct=miqa.tolerance)
