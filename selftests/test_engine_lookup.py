"""Serving a cell's results after ``prepare``: from the planned work items, not planned again per cell."""

from __future__ import annotations

from miqa_checks.config import resolve_settings
from miqa_checks.engine import Engine
from miqa_checks.engine.store import ResultStore
from miqa_checks.matrix import plan_cells

DATASETS = [("samples_ct", "CT"), ("samples_dermoscopy", "dermoscopy")]


def _engine(tmp_path) -> tuple[Engine, list]:
    settings = resolve_settings({"model": ["sim-paper"], "max_images": 4, "cache": str(tmp_path / "store")})
    engine = Engine(settings, store=ResultStore(tmp_path / "store", "run"), progress=False)
    return engine, plan_cells(["sim-paper"], DATASETS, with_baseline=False)


def test_lookups_after_prepare_build_no_work_item_per_cell(tmp_path, monkeypatch):
    engine, cells = _engine(tmp_path)
    engine.prepare(cells)
    planned = len(engine.plan(cells))
    calls = []
    item = Engine.item
    monkeypatch.setattr(Engine, "item", lambda self, *a: calls.append(a) or item(self, *a))
    lookups = [engine.lookup_for(cell) for cell in cells]
    per_cell = sum(len(c.requests()) * len(engine.image_ids(c.dataset)) for c in cells)
    assert per_cell > 5 * planned  # cells share requests: planning each cell again costs many times the plan
    assert len(calls) <= planned  # at most once per request (a request asked without the embedding it was planned with)
    for cell, lookup in zip(cells, lookups):
        for spec in cell.requests():
            for image_id in engine.image_ids(cell.dataset):
                result = lookup(spec, image_id)
                assert result is not None and result is engine._results[engine.item(cell.model, cell.dataset, image_id, spec).key]
    engine.close()


def test_a_cell_served_alone_gets_its_requests_and_only_them(tmp_path):
    engine, cells = _engine(tmp_path)
    cell = next(c for c in cells if c.condition != "clean")
    lookup = engine.lookup_for(cell)
    image_id = engine.image_ids(cell.dataset)[0]
    assert all(lookup(spec, image_id) is not None for spec in cell.requests())
    other = next(s for c in cells for s in c.requests() if s not in cell.requests() and c.dataset == cell.dataset)
    assert lookup(other, image_id) is None
    assert {i.key for i in engine.used.values()} == set(engine.used) and len(engine.used) == len(cell.requests()) * 4
    engine.close()


def test_a_cell_check_asks_each_result_once(tmp_path):
    """The checks (lost images, scores, series) read one request's results per image once per cell."""
    from miqa_checks.config import resolve_settings as settings_of
    from miqa_checks.evaluate import evaluate_cell
    from miqa_checks.records import ScoreResult

    engine, cells = _engine(tmp_path)
    thresholds = settings_of({"model": ["sim-paper"]}).thresholds
    ids = [f"img{i}" for i in range(40)]
    for cell in cells:
        asked = []

        def lookup(spec, image_id):
            asked.append((spec, image_id))
            return ScoreResult(score=3.0 + (hash(image_id) % 7) / 10, method="expected", probs=None, parse_ok=True,
                               raw_text="3", embedding=None)

        evaluate_cell(cell, ids, lookup, thresholds, family_size=1, seed=0)
        assert len(asked) == len(set(asked)) <= len(cell.requests()) * len(ids)
    engine.close()
