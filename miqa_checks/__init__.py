"""miqa-checks: a pytest-based robustness audit for VLM judges of medical image quality."""

__version__ = "0.1.0"
