"""Conditions: the corruption registry and the built-in corruption sets.

Importing this package registers the built-in sets (``imagenet_c``, ``medical``) and imports no
numpy; a user registers a corruption with :func:`corruption` from any module they import (for
example from their ``conftest.py``), and it gets the same seeding, caching, batching, report
rows and ``-k`` ids as the built-in ones.
"""

from __future__ import annotations

from . import imagenet_c, medical  # noqa: F401 - registers the built-in sets, in this order
from .modalities import canonical_modality, corruptions_for
from .registry import (
    CORRUPTION_PROPERTIES,
    MIN_SIDE,
    PARAMETER_SETS,
    REGISTRY,
    SEVERITIES,
    Corruption,
    apply,
    apply_batch,
    condition_id,
    corruption,
    parameters,
    parse_condition,
    rng_for,
)

#: The sets the audit matrix plans today: the protocol's seven plus every user corruption.
AUDIT_SETS: tuple[str, ...] = ("imagenet_c", "user")


def ids(*sets: str) -> tuple[str, ...]:
    """Registered corruption ids of the given sets (all when none given), in registration order."""
    return REGISTRY.ids(*sets)


def audit_ids() -> tuple[str, ...]:
    """The corruption ids the audit matrix plans, read when planning (so user corruptions count)."""
    return REGISTRY.ids(*AUDIT_SETS)


__all__ = [
    "AUDIT_SETS", "CORRUPTION_PROPERTIES", "MIN_SIDE", "PARAMETER_SETS", "REGISTRY", "SEVERITIES", "Corruption",
    "apply", "apply_batch", "audit_ids", "canonical_modality", "condition_id", "corruption", "corruptions_for",
    "ids", "parameters", "parse_condition", "rng_for",
]
