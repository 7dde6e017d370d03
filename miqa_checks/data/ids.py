"""Dataset ids as used in test ids: ``[a-z0-9_]+``."""

from __future__ import annotations

import re

_VALID = re.compile(r"^[a-z0-9_]+$")


def sanitise(name: str, fallback: str = "images") -> str:
    """Lower-case, every run of other characters -> ``_`` (``"Chest X-Ray"`` -> ``"chest_x_ray"``)."""
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or fallback


def is_valid(name: str) -> bool:
    """True when ``name`` is already a usable dataset id."""
    return bool(_VALID.match(name))


def unique(names: list[str]) -> list[str]:
    """Sanitised ids, made unique by ``_2``, ``_3`` ... suffixes in input order."""
    seen: set[str] = set()
    out = []
    for name in names:
        base = candidate = sanitise(name)
        k = 2
        while candidate in seen:
            candidate, k = f"{base}_{k}", k + 1
        seen.add(candidate)
        out.append(candidate)
    return out
