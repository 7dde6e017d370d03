"""Which corruptions apply to which modality: modality text -> canonical key -> corruption ids.

Modality text is free (``"CT"``, ``"chest X-ray"``, ``"fundus photography"``); :func:`canonical_modality`
maps it to one of :data:`MODALITY_KEYS` by keywords. Light at import (no numpy).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from .registry import REGISTRY

MODALITY_KEYS: tuple[str, ...] = (
    "xray", "ct", "mr", "ultrasound", "oct", "dermoscopy", "pathology", "blood", "tissue", "fundus", "other",
)
#: (key, pattern) in order of precedence; matched against lower-cased modality text / dataset ids.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("oct", r"\boct\b|octmnist|optical coherence"),
    ("xray", r"x[- ]?ray|radiograph|\bcxr\b|mammogra|chestmnist|pneumonia"),
    ("ct", r"\bct\b|computed tomography|organ[acs]?mnist"),
    ("mr", r"\bmri?\b|magnetic resonance"),
    ("ultrasound", r"ultrasound|sonograph|\bus\b|echocardio|breastmnist"),
    ("dermoscopy", r"dermo|derma|skin|lesion"),
    ("blood", r"blood|bloodmnist|smear"),
    ("tissue", r"tissuemnist|kidney cortex"),
    ("pathology", r"patholog|histolog|histopath|microscop|pathmnist|cell|\bwsi\b|slide"),
    ("fundus", r"fundus|retina"),
)


@lru_cache(maxsize=512)
def canonical_modality(modality: str | None) -> str:
    """``"Chest X-Ray"`` -> ``"xray"``; ``"fundus photography"`` -> ``"fundus"``; unknown/None -> ``"other"``."""
    text = (modality or "").strip().lower().replace("_", " ")
    for key, pattern in _PATTERNS:
        if re.search(pattern, text):
            return key
    return "other"


def corruptions_for(
    modality: str | None,
    set_names: Iterable[str] = ("imagenet_c",),
    overrides: Mapping[str, Iterable[str]] | None = None,
) -> tuple[str, ...]:
    """The corruption ids of ``set_names`` that apply to ``modality``, in registration order.

    A corruption applies when its ``applies_to`` accepts the modality (ImageNet-C and user
    corruptions without one apply everywhere; the medical set follows :data:`medical.DEFAULT_MAPPING`).
    ``overrides``: canonical modality key (or the modality text itself) -> the ids to use instead,
    e.g. ``{"ultrasound": ["speckle_noise", "characters"]}``; ids must be registered.
    """
    sets = tuple(set_names)
    key = canonical_modality(modality)
    if overrides:
        chosen = overrides.get(key, overrides.get(modality or "", None))
        if chosen is not None:
            chosen = list(chosen)
            for name in chosen:
                REGISTRY[name]  # ValueError on an unknown id
            return tuple(i for i in REGISTRY.ids(*sets) if i in chosen)
    return tuple(i for i in REGISTRY.ids(*sets) if REGISTRY[i].applies(None, modality))
