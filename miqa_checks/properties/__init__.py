"""Properties: each one object (cells, requests per image, tolerance with its reason, alpha share,
rule), held by a registry; the built-in ones are registered here, one module per family, the same
way a user registers one (:func:`audit` in a test file, or :func:`define` in a conftest.py).

Light at import (no numpy). The statistics a rule calls are in :mod:`.verdicts` (pure functions:
paired arrays -> Verdict) and the data and assertion helpers a rule sees in :mod:`.check`; both
load on first use: ``from miqa_checks import properties as P; P.relative_change(...)``. A built-in
property object: ``REGISTRY["no_inflation"]`` or ``from miqa_checks.properties.corruption import no_inflation``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    CONDITION, DEFAULT_SHARE, REGISTRY, VARIANT, Cell, PlanContext, Property, Tolerance, audit, define, each,
    each_corruption, once, plan_cells, profile_key, request,
)
from . import corruption, metadata, embedding, prompt, reliability, baseline  # noqa: E402,F401 - built-ins, in matrix order

__all__ = [
    "CONDITION", "DEFAULT_SHARE", "REGISTRY", "VARIANT", "Cell", "PlanContext", "Property", "Tolerance", "audit",
    "define", "each", "each_corruption", "once", "plan_cells", "profile_key", "request",
]


def __getattr__(name: str) -> Any:
    """The pure verdict functions (numpy), loaded on first use: ``properties.relative_change``."""
    if name.startswith("__"):
        raise AttributeError(name)
    verdicts = importlib.import_module(f"{__name__}.verdicts")
    try:
        return getattr(verdicts, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
