"""Parallelism: the audit with ``-n 2`` against one process, on a device-bound judge.

    python -m benchmarks.bench_xdist [--repeats 3] [--workers 2] [--device-s 80] [--json out.json]

The judge is the simulated one with ``latency_ms`` (``sim:latency_ms=L``): each batch is held L ms
without using the CPU, as a GPU holds it, so the work that ``-n`` shares out is device time, as on
a machine with one accelerator per worker. L is chosen from the plan so that one process spends
about ``--device-s`` seconds on the device (batch size 16, the default audit's full matrix on the
embedded samples). Each repeat runs the audit back to back with a fresh result store each: once in
one process, once with ``-n <workers>``; ratio = one-process wall / parallel wall (goal >= 1.7x
with 2 workers). Start-up, collection and reports are paid per run (and start-up per worker), so
they are in both walls, as a user sees them.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from .common import check_ran, emit, make_row, tempdir, timed_pytest

GOAL_RATIO = 1.7
BATCH = 16


def batches_of_default_audit(batch: int = BATCH) -> int:
    """Batches the default audit's full matrix makes on the samples for a simulated judge."""
    from .bench_engine import plan_size

    return plan_size("sim-robust", batch)[1]


def measure(repeats: int, workers: int, device_s: float) -> tuple[str, int, list[dict[str, Any]]]:
    batches = batches_of_default_audit()
    latency_ms = round(1000.0 * device_s / batches, 1)
    model = f"sim:latency_ms={latency_ms}"
    audit = ["tests", "--miqa-data", "samples", "--miqa-model", model, "--miqa-batch-size", str(BATCH), "-q"]
    pairs = []
    for _ in range(repeats):
        tmp = tempdir("xdist")
        try:
            pair = {}
            for name, flags in (("one", []), ("parallel", ["-n", str(workers)])):
                limit = 1800.0 if name == "one" else max(180.0, 5 * pair["one"]["wall_s"])
                res = timed_pytest([*audit, *flags, "--miqa-cache", str(tmp / f"cache-{name}"),
                                    "--miqa-report-dir", str(tmp / f"reports-{name}")], timeout=limit,
                                   probe=tmp / f"probe-{name}")
                check_ran(res, f"audit ({name})")
                pair[name] = res
            pairs.append(pair)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model, batches, pairs


def rows_from(model: str, batches: int, pairs: Sequence[dict[str, Any]], workers: int, device_s: float) -> list[dict]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    one = [p["one"]["wall_s"] for p in pairs]
    par = [p["parallel"]["wall_s"] for p in pairs]
    calls = [sum(x["sim_calls"] for x in p["one"]["probe"]) for p in pairs]
    device = [sum(x["sim_score_s"] for x in p["one"]["probe"]) for p in pairs]
    per_worker = [sorted(round(x["sim_score_s"]) for x in p["parallel"]["probe"] if x["worker"] != "main") for p in pairs]
    return [make_row(
        "xdist", f"device-bound judge: -n {workers} vs one process", baseline="one process", candidate=f"-n {workers}",
        baseline_s=one, candidate_s=par, values=[o / p for o, p in zip(one, par)], goal_op=">=", goal_value=GOAL_RATIO,
        note=f"{model}, batch {BATCH}: {calls[0]} batches scored, {min(device):.0f}-{max(device):.0f} s in the judge in one "
        f"process (L from a plan of {batches} batches aiming at {device_s:.0f} s), per -n worker {per_worker}; cold store "
        f"each; cpu_count {os.cpu_count()}, load average after the runs {load:.1f}")]


def run(repeats: int = 3, workers: int = 2, device_s: float = 80.0) -> list[dict]:
    model, batches, pairs = measure(repeats, workers, device_s)
    return rows_from(model, batches, pairs, workers, device_s)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device-s", type=float, default=80.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return emit(run(args.repeats, args.workers, args.device_s), args.json)


if __name__ == "__main__":
    main()
