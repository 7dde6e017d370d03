"""Report rows from served results: ``scores.csv`` rows and ``errors.csv`` records."""

from __future__ import annotations

from typing import Any, Mapping

from ..matrix import model_label
from ..records import ScoreResult
from .plan import WorkItem


def score_rows(used: Mapping[str, WorkItem], results: Mapping[str, ScoreResult]) -> list[dict[str, Any]]:
    """``scores.csv`` rows for every used request (repeat copies left out)."""
    rows = []
    for key, item in used.items():
        result = results.get(key)
        if result is None or item.spec.repeat:
            continue
        probs = list(result.probs) if result.probs is not None else [None] * 5
        rows.append(
            {
                "model": model_label(item.model),
                "dataset": item.dataset,
                "image_id": item.image_id,
                "condition": item.spec.condition,
                "prompt_id": item.spec.prompt_id,
                "score": result.score,
                "parse_ok": result.parse_ok,
                "raw_text": result.raw_text,
                "method": result.method,
                "error": result.error or "",
                **{f"p{k + 1}": p for k, p in enumerate(probs)},
            }
        )
    return rows


def result_errors(used: Mapping[str, WorkItem], results: Mapping[str, ScoreResult]) -> list[dict[str, str]]:
    """Error records for the used requests that failed (``stage`` score or corruption) or whose
    answer did not parse (``stage`` parse), built from the results served, so a rerun that reads
    them from the store reports the same records as the run that computed them."""
    out = []
    for key, item in used.items():
        result = results.get(key)
        if result is None:
            continue
        stage = result.loss_stage()
        if stage in (None, "not_applicable"):  # the matrix says not applicable; no error
            continue
        reason = f"unparseable answer: {result.raw_text[:120]!r}" if stage == "parse" else result.error
        where = f"{item.image_id} [{item.spec.condition}, {item.spec.prompt_id}{', repeat' if item.spec.repeat else ''}]"
        out.append({"model": model_label(item.model), "dataset": item.dataset, "file_or_image": where, "stage": stage, "reason": reason})
    return out
