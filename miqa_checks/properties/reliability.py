"""Repeatability and output validity."""

from __future__ import annotations

from ..conditions import REGISTRY as CORRUPTIONS
from ..conditions import audit_ids
from ..requests import CLEAN, RequestSpec, condition_id
from .base import Cell, define, once, profile_key, request


def every_condition(cell: Cell) -> list[RequestSpec]:
    """Clean and every audited corruption at each of its severities (base prompt)."""
    return [RequestSpec(CLEAN), *(RequestSpec(condition_id(c, s)) for c in audit_ids() for s in CORRUPTIONS[c].severities)]


@define(
    cells=once,
    requests=[CLEAN, request(repeat=1)],
    tolerance=profile_key("repeatability_tolerance",
                          why="the same request twice (the second in a batch of one): identical within 1e-3 points"),
    deterministic=True,
)
def repeatability(miqa):
    """The same request twice (the second alone in a batch of one) gives the same score."""
    first, again = miqa.requests
    miqa.assert_repeatable(first, again, tolerance=miqa.tolerance)


@define(
    cells=once,
    requests=every_condition,
    tolerance={
        "max_parse_failure_rate": profile_key("max_parse_failure_rate", why="at most 5 % unparseable answers"),
        "max_out_of_range_rate": profile_key("max_out_of_range_rate", why="no score outside the 1..5 scale"),
    },
    parse_failures_are_losses=False,
)
def output_validity(miqa):
    """Parse-failure and out-of-range rates stay under the profile's limits."""
    miqa.assert_valid_outputs(**miqa.tolerance)
