"""From stored results to a cell's verdict: runs the cell's property rule on its data.

``lookup(RequestSpec, image_id) -> ScoreResult | None`` hides where results come from (the engine
in a run, a synthetic table in the validation self-tests). Baselines come as
``{(dataset, image_id, condition, prompt_id): score}``. The data access, the assertion helpers
and the loss rule are in :mod:`miqa_checks.properties.check`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .properties import REGISTRY, Cell
from .properties.check import (
    BaselineScores, CellCheck, CellOutcome, Lookup, error_verdict, lost_images, not_applicable_verdict, run_rule,
)

__all__ = ["CellOutcome", "error_verdict", "evaluate_cell", "lost_images", "not_applicable_verdict"]


def evaluate_cell(
    cell: Cell,
    image_ids: Sequence[str],
    lookup: Lookup,
    thresholds: Mapping[str, Any],
    *,
    family_size: float,
    seed: int,
    baseline: BaselineScores | None = None,
    groups: Sequence[str] | None = None,
) -> CellOutcome:
    """Evaluate one cell on the given images (the dataset's chosen images, sorted) with its
    property's rule and the profile's tolerance.

    A cell that lost more than ``max_lost_share`` of its images to errors (scoring, parse,
    corruption) is an ``error`` whatever its statistic says; ``inconclusive`` is kept for too
    few images. ``groups``: the group of each image (same order); under ``unit = "group"`` the
    statistics are cluster-robust over groups and ``n`` counts groups.
    """
    prop = REGISTRY[cell.property]
    check = CellCheck(cell, image_ids, lookup, thresholds, family_size=family_size, seed=seed, baseline=baseline,
                      tolerance=prop.tolerance_for(thresholds, cell), groups=groups)
    return run_rule(check, prop.rule)
