"""Cache keys: a request's key is a hash of everything that determines its answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from .. import __version__


def image_hash(image: np.ndarray) -> str:
    """sha256 over shape, dtype and bytes of an image."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


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
