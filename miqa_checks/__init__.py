"""miqa-checks: a pytest-based robustness audit for VLM judges of medical image quality."""

__version__ = "0.1.0"

from .conditions import corruption  # noqa: E402,F401 - public: @miqa_checks.corruption(...) (no numpy at import)
