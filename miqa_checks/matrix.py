"""The audit matrix: the cells of every registered property, and the requests each one needs.

A cell is one parametrised test (one row of ``matrix.csv``). Cells are planned at collection
time from cheap facts (model specs, dataset names and modalities, baseline given or not), so the
same matrix comes out in every process, with or without ``-k`` or ``-n``. The cells, requests and
rules themselves are declared by the properties (:mod:`miqa_checks.properties`); this module is
the planning entry point the engine and the plugin use. Pure Python.
"""

from __future__ import annotations

from .properties import REGISTRY, Cell, plan_cells
from .properties.base import dataset_corruptions
from .requests import CLEAN, SEVERITIES, RequestSpec, condition_id

__all__ = ["CLEAN", "SEVERITIES", "Cell", "RequestSpec", "condition_id", "dataset_corruptions",
           "model_label", "plan_cells", "properties"]


def properties() -> dict[str, str]:
    """Registered property -> what varies across its cells (built-in and user properties)."""
    return {p.name: p.varies for p in REGISTRY}


def model_label(spec: str) -> str:
    """A short, path-free, credential-free label for a model spec (see :mod:`miqa_checks.judges.spec`)."""
    from .judges.spec import model_label as label

    return label(spec)


def __getattr__(name: str) -> object:
    """``PROPERTIES`` (property -> what varies) and ``BASELINE_PROPERTIES``, read from the registry when asked."""
    if name == "PROPERTIES":
        return properties()
    if name == "BASELINE_PROPERTIES":
        return tuple(p.name for p in REGISTRY if p.needs_baseline)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
