"""Reading stored rows: the probabilities of a chunk of rows are parsed and checked at once."""

from __future__ import annotations

import json

from miqa_checks.engine import store as store_module
from miqa_checks.engine.store import ResultStore
from miqa_checks.records import ScoreResult


def _result(i: int) -> ScoreResult:
    probs = (0.1, 0.2, 0.3, 0.2, 0.2 + i * 1e-9)
    return ScoreResult(score=3.0, method="expected", probs=probs, parse_ok=True, raw_text="3", embedding=None)


def test_a_thousand_rows_are_checked_with_a_json_parse_per_chunk(tmp_path, monkeypatch):
    store = ResultStore(tmp_path, "run")
    store.put_many([(f"k{i}", _result(i)) for i in range(1000)])
    store.put_many([("bad", _result(0))])
    store._db.execute("UPDATE results SET probs = '[0.1, 0.2, true, 0.2, 0.2]' WHERE key = 'bad'")
    parses = []
    loads = json.loads
    monkeypatch.setattr(store_module, "json", type("J", (), {"loads": staticmethod(lambda t: parses.append(t) or loads(t)),
                                                              "dumps": staticmethod(json.dumps)}))
    found = store.get_many([f"k{i}" for i in range(1000)])
    assert len(parses) == 2  # one per chunk of 500 keys
    assert [found[f"k{i}"].probs for i in range(1000)] == [_result(i).probs for i in range(1000)]
    assert store.get_many(["bad"]) == {}  # a row that is not 5 probabilities is missing (checked row by row)
    store.close()
