"""The benchmark harness runs end to end in its ``--quick`` configuration and writes well-formed
``bench.json`` / ``bench.md``. No timing is asserted: benchmarks are not tests (timings on a shared
machine are noise); only the shape of the rows is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"benchmark", "case", "baseline", "candidate", "baseline_s", "candidate_s", "value", "min", "max",
            "repeats", "unit", "goal", "goal_op", "goal_value", "met", "note"}
#: the quick subset that fits the self-test budget: every benchmark kind except the -n 2 audits
QUICK = "corruptions,scoring,engine,served,cache,collection,gpu"


def _run(out: Path, only: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    for k in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        env.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick", "--only", only, "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )


def test_quick_benchmarks_write_well_formed_rows(tmp_path: Path) -> None:
    pytest.importorskip("imagecorruptions")
    done = _run(tmp_path, QUICK)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = data["rows"]
    assert data["meta"]["mode"] == "quick"
    assert {r["benchmark"] for r in rows} >= {"corruptions", "scoring", "engine", "served", "cache", "collection"}
    assert "gpu" in {r["benchmark"] for r in rows} or "gpu_smoke" in {r["benchmark"] for r in rows}
    for row in rows:
        assert set(row) == ROW_KEYS, row
        assert row["repeats"] >= 1
        assert row["min"] <= row["value"] <= row["max"], row
        assert row["met"] in (True, False, None)
        if row["goal_op"] is None:
            assert row["met"] is None and row["goal"] == "-"
        else:
            assert row["goal_op"] in (">=", "<=") and isinstance(row["goal_value"], float | int)
            assert isinstance(row["met"], bool)
    corruption_cases = {r["case"] for r in rows if r["benchmark"] == "corruptions"}
    assert {"brightness", "pixelation", "zoom_blur", "median over the 7 corruptions"} <= corruption_cases
    scoring = {r["case"] for r in rows if r["benchmark"] == "scoring"}
    assert "tiny-llava: expected vs generate as the paper runs it (200 new tokens)" in scoring
    assert "tiny-llava: expected vs generate-8" in scoring
    engine = {r["case"] for r in rows if r["benchmark"] == "engine"}
    assert any(c.startswith("harness ceiling, total") for c in engine)
    assert "overlap: wall / max(preparation alone, device alone)" in engine
    served = {r["case"] for r in rows if r["benchmark"] == "served"}
    assert {"concurrency 1: requests/s", "client ceiling (service 0 ms, concurrency 64)"} <= served
    warm_floor = [r for r in rows if r["benchmark"] == "cache" and r["case"].startswith("warm floor: ")]
    assert len(warm_floor) == 8 and all(r["unit"] == "s" for r in warm_floor)
    pipeline = [r for r in rows if r["benchmark"] in ("gpu", "gpu_smoke") and "whole pipeline" in r["case"]]
    assert len(pipeline) >= 2  # the GPU script goes through the engine, not only the model
    # the warm run proves no model load; collection proves torch stays out (these are facts, not timings)
    proof = {r["case"]: r for r in rows if r["unit"] == "bool"}
    assert proof["warm run loads no model"]["met"] is True
    assert proof["torch not imported during collection"]["met"] is True

    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("# miqa-checks benchmarks")
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert len(table_rows) == len(rows)
    assert all(line.count("|") == 13 for line in table_rows), table_rows[:3]


def test_unknown_benchmark_is_a_usage_error(tmp_path: Path) -> None:
    done = _run(tmp_path, "nope")
    assert done.returncode == 2
    assert "unknown benchmark" in done.stderr
