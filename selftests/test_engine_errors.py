"""A request whose condition image cannot be made is one error record, with its stage and reason."""

from __future__ import annotations

from miqa_checks.engine.store import ResultStore
from miqa_checks.config import resolve_settings
from miqa_checks.engine import Engine, pipeline, prepare
from miqa_checks.matrix import plan_cells


def test_a_failed_corruption_is_reported_once_and_the_rest_scored(tmp_path, monkeypatch):
    real_make = prepare.make_image

    def make_image(task):
        if task.severity == 3:
            raise ValueError("image too small for this corruption")
        return real_make(task)

    monkeypatch.setattr(prepare, "make_image", make_image)
    monkeypatch.setenv(pipeline.ENV, "0")  # prepared in this process, where the patch applies
    settings = resolve_settings({"model": ["sim-robust"], "max_images": 4, "cache": str(tmp_path / "c")})
    engine = Engine(settings, store=ResultStore(tmp_path / "c", "run"), progress=False)
    cell = next(c for c in plan_cells(["sim-robust"], [("samples_ct", "CT")], with_baseline=False)
                if c.property == "severity_response" and c.corruption == "pixelation")
    engine.prepare([cell])
    lookup = engine.lookup_for(cell)
    ids = engine.image_ids("samples_ct")
    errors = engine.errors + engine.result_errors()
    assert [(e["stage"], e["file_or_image"]) for e in errors] == [("corruption", f"{i} [pixelation-3, base]") for i in ids]
    assert all("image too small" in e["reason"] for e in errors)
    scored = [lookup(spec, i) for spec in cell.requests() if spec.condition != "pixelation-3" for i in ids]
    assert all(r is not None and r.error is None for r in scored)
