"""The published protocol's summary numbers, computed the published way, beside the paper's.

Per (model, dataset, corruption): the mean score over all five severities pooled, against the
clean mean: ``(mean - clean_mean) / clean_mean * 100``; per attribute phrase: the same against the
prompt with no attribute. As published, unparsed answers are left out of each mean (not paired);
the audit's own cells (``matrix.csv``) use paired images and carry CIs. Written to
``published.csv`` so a run sits beside the paper's table (PROTOCOL.md, "Headline results").
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

from .prompts import ATTRIBUTES, BASE_PROMPT_ID

#: Mean change over 16 VLMs reported by the paper, where it reports one (percent).
PUBLISHED_PCT: dict[str, float] = {
    "pixelation": -20.58,
    "brightness": -0.81,
    "institution-world_class": 17.15,
    "infrastructure-old_device": -14.7,
}

COLUMNS = ("model", "dataset", "kind", "name", "n_ref", "n_cond", "ref_mean", "cond_mean", "delta_pct", "published_delta_pct")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def published_table(scores: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``published.csv`` from ``scores.csv`` rows (score NaN or empty = left out)."""
    groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for row in scores:
        score = row.get("score")
        if score is None or score == "" or (isinstance(score, float) and math.isnan(score)):
            continue
        score = float(score)
        key = (row["model"], row["dataset"])
        condition, prompt = row["condition"], row["prompt_id"]
        if condition == "clean":
            groups[(*key, "ref", prompt)].append(score)
        elif prompt == BASE_PROMPT_ID:
            groups[(*key, "corruption", condition.rsplit("-", 1)[0])].append(score)
    out = []
    for (model, dataset, kind, name), values in sorted(groups.items()):
        if kind == "ref" and name not in ATTRIBUTES:
            continue
        ref = groups.get((model, dataset, "ref", BASE_PROMPT_ID), [])
        ref_mean, cond_mean = _mean(ref), _mean(values)
        out.append(
            {
                "model": model,
                "dataset": dataset,
                "kind": "attribute" if kind == "ref" else "corruption",
                "name": name,
                "n_ref": len(ref),
                "n_cond": len(values),
                "ref_mean": ref_mean,
                "cond_mean": cond_mean,
                "delta_pct": (cond_mean - ref_mean) / ref_mean * 100 if ref and ref_mean else math.nan,
                "published_delta_pct": PUBLISHED_PCT.get(name, math.nan),
            }
        )
    return out
