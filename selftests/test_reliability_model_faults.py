"""Model faults through the engine: a real tiny transformers judge (tiny-qwen2vl) with faults
injected on chosen images. Each fault becomes an error record with its reason, the other requests
are scored, and the computation completes.

Injected: an exception in one batch, NaN logits, a simulated out-of-memory (the batch halves), an
empty and an unparseable generation; plus a judge that raises for a whole batch (the engine scores
the batch's items one by one, so only the failing one fails).
"""

from __future__ import annotations

import math
import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")

from miqa_checks.engine.store import ResultStore  # noqa: E402
from miqa_checks.config import resolve_settings  # noqa: E402
from miqa_checks.engine import Engine  # noqa: E402
from miqa_checks.matrix import plan_cells  # noqa: E402

MODEL = "tiny-qwen2vl"
DATASET = ("samples_ct", "CT")


def _engine(tmp_path, scoring: str) -> tuple[Engine, list]:
    settings = resolve_settings({
        "model": [MODEL], "data": ["samples"], "max_images": 6, "batch_size": 4, "device": "cpu",
        "cache": str(tmp_path / "cache"), "scoring": scoring, "max_new_tokens": 4,
    })
    engine = Engine(settings, store=ResultStore(tmp_path / "cache", f"run-{scoring}"), progress=False)
    cells = [c for c in plan_cells([MODEL], [DATASET], with_baseline=False)
             if c.property == "corruption_stability" and c.condition == "pixelation-1"]
    assert cells
    return engine, cells


def _run(engine: Engine, cells) -> tuple[dict, dict]:
    engine.prepare(cells)
    for cell in cells:
        engine.lookup_for(cell)
    errors = {(e["file_or_image"].split(" ")[0], e["file_or_image"].split("[")[1].split(",")[0]): e for e in engine.result_errors()}
    rows = {(r["image_id"], r["condition"]): r for r in engine.score_rows()}
    return errors, rows


def test_expected_scoring_faults_are_isolated_and_recorded(tmp_path):
    engine, cells = _engine(tmp_path, "expected")
    ids = engine.image_ids(DATASET[0])
    raise_id, nan_id = ids[0], ids[1]
    judge = engine.judge(MODEL)
    judge._load()
    inner, forward = judge._run_batch_inner, judge._forward
    current: list = []
    batch_sizes: list[int] = []

    def run_batch_inner(requests):
        if any(r.meta.image_id == raise_id and r.meta.condition == "clean" for r in requests):
            raise RuntimeError("injected model bug")
        current[:] = list(requests)
        batch_sizes.append(len(requests))
        return inner(requests)

    def poisoned_forward(inputs, hidden):
        out = forward(inputs, hidden)
        for k, r in enumerate(current):
            if r.meta.image_id == nan_id:
                out.logits[k, -1, :] = float("nan") if r.meta.condition == "clean" else float("inf")
        return out

    judge._run_batch_inner = run_batch_inner
    judge._forward = poisoned_forward
    judge._simulate_oom = lambda n: n > 2  # out of memory above two images: 4 -> 2
    errors, rows = _run(engine, cells)

    assert 4 in batch_sizes and judge._batch_size == 2  # out of memory at 4: the batch halved to 2
    assert not any("out of memory" in e["reason"] for e in errors.values())  # and nothing was lost to it
    assert "injected model bug" in errors[(raise_id, "clean")]["reason"] and errors[(raise_id, "clean")]["stage"] == "score"
    assert errors[(nan_id, "clean")]["reason"] == "non-finite logits"
    assert errors[(nan_id, "pixelation-1")]["reason"] == "non-finite logits"
    assert set(errors) == {(raise_id, "clean"), (nan_id, "clean"), (nan_id, "pixelation-1")}
    assert len(rows) == 2 * len(ids)  # every request has a row, failed ones included
    for (image_id, condition), row in rows.items():
        if (image_id, condition) in errors:
            assert math.isnan(row["score"]) and row["error"]
        else:
            assert 1 <= row["score"] <= 5 and not row["error"], row
    engine.close()


def test_empty_and_unparseable_generations_are_recorded(tmp_path):
    engine, cells = _engine(tmp_path, "generate")
    ids = engine.image_ids(DATASET[0])
    empty_id, prose_id = ids[2], ids[3]
    judge = engine.judge(MODEL)
    judge._load()
    inner = judge._run_batch_inner
    tokenizer = judge._processor.tokenizer
    decode = tokenizer.batch_decode
    current: list = []

    def run_batch_inner(requests):
        current[:] = list(requests)
        return inner(requests)

    def batch_decode(tokens, **kw):
        texts = decode(tokens, **kw)
        if len(texts) != len(current):
            return texts
        fixed = {empty_id: "", prose_id: "the image quality looks fine"}
        return [fixed.get(r.meta.image_id, "3/5") for r in current]

    judge._run_batch_inner = run_batch_inner
    tokenizer.batch_decode = batch_decode
    errors, rows = _run(engine, cells)
    assert {k[0] for k in errors} == {empty_id, prose_id}
    assert all(e["stage"] == "parse" and "unparseable answer" in e["reason"] for e in errors.values())
    assert "the image quality looks fine" in errors[(prose_id, "clean")]["reason"]
    for (image_id, _), row in rows.items():
        assert (row["parse_ok"] is False) == (image_id in (empty_id, prose_id))
        assert row["score"] == 3 or image_id in (empty_id, prose_id)
    engine.close()


def test_a_judge_that_raises_for_a_whole_batch_fails_only_the_bad_item(tmp_path):
    """The engine isolates the failing item when a judge does not (a bug in any adapter)."""
    settings = resolve_settings({"model": ["sim-robust"], "data": ["samples"], "max_images": 6, "batch_size": 8,
                                 "cache": str(tmp_path / "cache")})
    engine = Engine(settings, store=ResultStore(tmp_path / "cache", "run"), progress=False)
    cells = [c for c in plan_cells(["sim-robust"], [DATASET], with_baseline=False)
             if c.property == "corruption_stability" and c.condition == "pixelation-1"]
    bad = engine.image_ids(DATASET[0])[4]
    judge = engine.judge("sim-robust")
    score = judge.score

    def fragile(requests):
        if any(r.meta.image_id == bad and r.meta.condition == "clean" for r in requests):
            raise ValueError("injected adapter bug")
        return score(requests)

    judge.score = fragile
    errors, rows = _run(engine, cells)
    assert list(errors) == [(bad, "clean")] and "ValueError: injected adapter bug" in errors[(bad, "clean")]["reason"]
    assert sum(1 <= r["score"] <= 5 for r in rows.values()) == len(rows) - 1
    engine.close()
