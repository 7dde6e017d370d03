"""What a cell asks of the engine for each image: a condition x prompt (x repeat), with or without
the embedding. Pure Python, no numpy: cells and their requests are planned at collection.
"""

from __future__ import annotations

from dataclasses import dataclass

from .conditions import SEVERITIES
from .prompts import BASE_PROMPT_ID

CLEAN = "clean"

__all__ = ["CLEAN", "SEVERITIES", "RequestSpec", "condition_id"]


def condition_id(corruption: str, severity: int) -> str:
    """``pixelation``, 3 -> ``pixelation-3``."""
    return f"{corruption}-{severity}"


@dataclass(frozen=True)
class RequestSpec:
    """One request per image of the cell's dataset: condition x prompt (x repeat); ``embed``: the
    image embedding is needed too."""

    condition: str
    prompt_id: str = BASE_PROMPT_ID
    repeat: int = 0
    embed: bool = False
