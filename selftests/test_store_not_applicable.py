"""A condition that does not apply to an image is an answer the key fixes: a later run serves it
from the store instead of preparing it again; other failures are still retried by later runs."""

from __future__ import annotations

from miqa_checks.engine.store import ResultStore
from miqa_checks.records import CONDITION_FAILED, NOT_APPLICABLE, ScoreResult


def test_not_applicable_results_serve_later_runs_and_failures_are_retried(tmp_path):
    first = ResultStore(tmp_path, "run-1")
    results = {
        "na": ScoreResult.failed("expected", f"{CONDITION_FAILED}saturate-3: saturate does not apply: {NOT_APPLICABLE}"),
        "small": ScoreResult.failed("expected", f"{CONDITION_FAILED}zoom_blur-1: image too small"),
        "judge": ScoreResult.failed("expected", "judge crashed"),
        "ok": ScoreResult(3.5, "expected", probs=(0.1, 0.1, 0.2, 0.3, 0.3)),
    }
    first.put_many(results.items())
    assert set(first.get_many(results)) == set(results)  # the run that made them uses them all
    first.close()
    later = ResultStore(tmp_path, "run-2")
    found = later.get_many(results, need_embedding={"na": True})  # a condition that does not apply has no embedding
    assert set(found) == {"na", "ok"}
    assert found["na"].error == results["na"].error and found["na"].loss_stage() == "not_applicable"
    later.close()
