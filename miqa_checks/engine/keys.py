"""Cache keys: a request's key is a hash of everything that determines its answer.

The key is the sha256 of the request's canonical JSON (``json.dumps(payload, sort_keys=True,
default=str)``). A run keys every request of its plan, tens of thousands, and they share all but
the image: the JSON around the image digest is encoded once per (condition, parameters) and per
(judge, prompt, ...) and the pieces joined, byte for byte what one ``json.dumps`` gives.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from .. import __version__
from ..data.index import pixel_digest as image_hash  # noqa: F401 - a request's image identity

__all__ = ["image_hash", "request_key"]

#: id(condition_params) -> (the dict, its JSON): the engine passes one dict per (dataset, condition)
_PARAMS: dict[int, tuple[dict[str, Any], str]] = {}


def _dump(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=str)


def _params_json(params: dict[str, Any]) -> str:
    """The parameters' JSON, encoded once per dict object (held here, so its id is not reused;
    the engine never changes a parameters dict once made)."""
    known = _PARAMS.get(id(params))
    if known is not None and known[0] is params:
        return known[1]
    if len(_PARAMS) >= 4096:
        _PARAMS.clear()
    text = _dump(params)
    _PARAMS[id(params)] = (params, text)
    return text


@lru_cache(maxsize=4096)
def _head(condition: str, params: str) -> str:
    return f'{{"condition": {_dump(condition)}, "condition_params": {params}, "image": '


@lru_cache(maxsize=4096)
def _tail(judge: str, max_new_tokens: int, prompt: str, repeat: int, system: str | None) -> str:
    return (f', "judge": {_dump(judge)}, "max_new_tokens": {_dump(max_new_tokens)}, "prompt": {_dump(prompt)}, '
            f'"repeat": {_dump(repeat)}, "system": {_dump(system)}, "v": {_dump(__version__)}}}')


def request_key(
    *, judge: str, image: str, condition: str, condition_params: dict[str, Any], prompt: str, system: str | None,
    max_new_tokens: int, repeat: int,
) -> str:
    """The store key of one request: sha256 of its canonical JSON (package version included)."""
    text = _head(condition, _params_json(condition_params)) + _dump(image) + _tail(judge, max_new_tokens, prompt, repeat, system)
    return hashlib.sha256(text.encode()).hexdigest()
