"""Request keys are built from cached JSON pieces; they must stay byte for byte the sha256 of the
request's canonical JSON (a different key would miss every stored result)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from miqa_checks import __version__
from miqa_checks.engine.keys import request_key

PARAMS = [
    {},
    {"source": "precorrupted"},
    {"source": "on_the_fly", "set": "imagenet_c", "params": {"c": [0.1, 0.2], "radius": 3, "nested": {"b": 1, "a": None}},
     "seed": 0},
    {"z": Path("/x/y"), "a": 1e-30, "u": "ünïcode \u2028 \"quoted\""},
]


def _reference(**kw) -> str:
    payload = {"v": __version__, **kw}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("system", [None, "You are a radiologist.\n\t"])
def test_request_key_is_the_sha256_of_the_canonical_json(params, system):
    for image in ("0" * 64, "ab" * 32):
        for condition, prompt, repeat, mnt in (("clean", "Rate this CT: 1-5?", 0, 8), ("pixelation-3", "é \\ \"q\"", 1, 200)):
            kw = dict(judge="sim-robust|v2", image=image, condition=condition, condition_params=params, prompt=prompt,
                      system=system, max_new_tokens=mnt, repeat=repeat)
            assert request_key(**kw) == _reference(**kw)
            assert request_key(**kw) == _reference(**kw)  # again, from the cached pieces
