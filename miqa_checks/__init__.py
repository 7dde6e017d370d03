"""miqa-checks: a pytest-based robustness audit for VLM judges of medical image quality.

Public API (light at import: no numpy): :func:`audit` makes a test an audit property test,
:func:`corruption` registers a corruption; see docs/EXTENDING.md.
"""

__version__ = "0.1.0"

from .conditions import corruption  # noqa: E402 - @miqa_checks.corruption(...)
from .properties import (  # noqa: E402 - @miqa_checks.audit(...) and what a declaration uses
    CONDITION, VARIANT, Tolerance, audit, define, each, each_corruption, once, profile_key, request,
)
from .requests import CLEAN, SEVERITIES  # noqa: E402

__all__ = [
    "CLEAN", "CONDITION", "SEVERITIES", "VARIANT", "Tolerance", "audit", "corruption", "define", "each",
    "each_corruption", "once", "profile_key", "request",
]
