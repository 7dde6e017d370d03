"""Shared helpers of the benchmarks: repeat statistics, result rows, running pytest in a subprocess.

A *row* is one line of ``reports/bench.md`` / one object of ``reports/bench.json``::

    {benchmark, case, baseline, candidate, baseline_s, candidate_s, value, min, max, repeats,
     unit, goal, goal_op, goal_value, met, note}

``value`` is the median over repeats of the per-repeat measure (a ratio measured side by side in
the same repeat, or a share), ``min`` / ``max`` its extremes over the repeats; ``met`` is None for
an informational row (no goal). Timings on a shared machine are noisy: read a low ``min`` as a
repeat that hit contention unless it reproduces.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
PROBE_ENV = "MIQA_BENCH_PROBE"


def make_row(
    benchmark: str,
    case: str,
    *,
    baseline: str,
    candidate: str,
    baseline_s: Sequence[float] | None,
    candidate_s: Sequence[float] | None,
    values: Sequence[float],
    unit: str = "x",
    goal_op: str | None = None,
    goal_value: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One row from per-repeat measurements (``values[i]`` belongs to repeat i)."""
    value = statistics.median(values)
    if goal_op is None:
        met, goal = None, "-"
    else:
        met = bool(value >= goal_value) if goal_op == ">=" else bool(value <= goal_value)
        goal = f"{goal_op} {_fmt(goal_value, unit)}"
    return {
        "benchmark": benchmark,
        "case": case,
        "baseline": baseline,
        "candidate": candidate,
        "baseline_s": statistics.median(baseline_s) if baseline_s else None,
        "candidate_s": statistics.median(candidate_s) if candidate_s else None,
        "value": value,
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
        "unit": unit,
        "goal": goal,
        "goal_op": goal_op,
        "goal_value": goal_value,
        "met": met,
        "note": note,
    }


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "bool":
        return "yes" if x >= 1 else "no"
    if unit == "%":
        return f"{100 * x:.1f} %"
    if unit == "x":
        return f"{x:.2f}x"
    return f"{x:.3g} {unit}"


def fmt_value(row: dict[str, Any], key: str) -> str:
    return _fmt(row.get(key), row.get("unit", "x"))


def fmt_seconds(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def timed_pytest(
    args: Sequence[str],
    *,
    cwd: Path = REPO,
    probe: Path | None = None,
    timeout: float = 1800,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python -m pytest <args>`` in a subprocess; wall time, exit code, output tail, probe data.

    With ``probe`` the benchmark probe plugin (``benchmarks.probe``) is loaded and writes its
    per-process JSON files under that folder; they are read back into ``result["probe"]`` (a list,
    one per process: the controller and each xdist worker).
    """
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    for k in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        full_env.pop(k, None)
    # benchmarks/ must be importable for ``-p benchmarks.probe`` from any cwd
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    if probe is not None:
        probe.mkdir(parents=True, exist_ok=True)
        full_env[PROBE_ENV] = str(probe)
        cmd[3:3] = ["-p", "benchmarks.probe"]
    start = time.perf_counter()
    # own session: on timeout the whole tree (xdist workers included) is killed, nothing is orphaned
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - start
    out = {"wall_s": wall, "returncode": proc.returncode, "tail": (output or "")[-3000:], "timed_out": timed_out}
    if probe is not None:
        out["probe"] = [json.loads(p.read_text()) for p in sorted(probe.glob("*.json"))]
    return out


def check_ran(result: dict[str, Any], what: str, ok: Sequence[int] = (0, 1)) -> None:
    """pytest exit codes 0 (all passed) and 1 (some tests failed: the audit fails on purpose) are fine."""
    if result.get("timed_out"):
        raise RuntimeError(f"{what}: timed out after {result['wall_s']:.0f} s:\n{result['tail']}")
    if result["returncode"] not in ok:
        raise RuntimeError(f"{what}: pytest exited {result['returncode']}:\n{result['tail']}")


def run_json(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / "run.json").read_text())


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"miqa-bench-{prefix}-"))


def emit(rows: list[dict[str, Any]], json_path: Path | None) -> list[dict[str, Any]]:
    """A benchmark's command-line output: the rows as a markdown table, and as JSON when asked."""
    from .report import format_markdown

    print(format_markdown(rows))
    if json_path:
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows
