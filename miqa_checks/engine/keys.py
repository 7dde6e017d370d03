"""Cache keys: a request's key is a hash of everything that determines its answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .. import __version__
from ..data.index import pixel_digest as image_hash  # noqa: F401 - a request's image identity

__all__ = ["image_hash", "request_key"]


def request_key(
    *, judge: str, image: str, condition: str, condition_params: dict[str, Any], prompt: str, system: str | None,
    max_new_tokens: int, repeat: int,
) -> str:
    """The store key of one request: sha256 of its canonical JSON (package version included)."""
    payload = {
        "v": __version__, "judge": judge, "image": image, "condition": condition, "condition_params": condition_params,
        "prompt": prompt, "system": system, "max_new_tokens": max_new_tokens, "repeat": repeat,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
