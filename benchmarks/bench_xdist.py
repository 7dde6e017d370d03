"""Parallelism: the audit with ``-n 2`` against one process, cold cache, on this machine.

    python -m benchmarks.bench_xdist [--repeats 3] [--workers 2] [--json out.json] [-- extra pytest args]

Each repeat runs the default audit (``pytest tests --miqa-data samples``: ``tiny-llava`` and
``sim-paper``) back to back, each with a fresh result store (every request computed): once in one
process, once with ``-n <workers>``; ratio = one-process wall time / parallel wall time (goal
>= 1.5x with 2 workers). Two settings, both in every repeat:

- *checkpoint pre-built* (the goal row): the tiny checkpoint, built once before the repeats, is
  copied into each fresh store, as it is on every run after a user's first (a real checkpoint is
  never built at all). The result store is still cold.
- *fully cold* (info): the tiny checkpoint is built inside the run too; under ``-n`` one worker
  builds it while the other waits on the file lock (a serial ~4 s).
The row note gives ``os.cpu_count()`` and the load average before the repeats: on a 2-core
machine shared with other work the parallel run competes with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from .common import check_ran, emit, make_row, tempdir, timed_pytest

GOAL_RATIO = 1.5
AUDIT = ["tests", "--miqa-data", "samples", "-q"]


def _prebuilt(home: Path) -> Path:
    """Build the tiny-llava checkpoint once under ``home``; its ``tiny`` folder, to copy into stores."""
    from miqa_checks.judges.tiny import tiny_checkpoint

    tiny_checkpoint("tiny-llava", home)
    return home / "tiny"


def measure(repeats: int, workers: int = 2, extra: Sequence[str] = (), cold_too: bool = True) -> list[dict[str, Any]]:
    pairs = []
    base = tempdir("xdist-ckpt")
    try:
        built = _prebuilt(base)
        settings = [("prebuilt", True)] + ([("cold", False)] if cold_too else [])
        for _ in range(repeats):
            tmp = tempdir("xdist")
            try:
                pair = {}
                for setting, copy in settings:
                    for name, flags in (("one", []), ("parallel", ["-n", str(workers)])):
                        cache = tmp / f"cache-{setting}-{name}"
                        if copy:
                            shutil.copytree(built, cache / "tiny")
                        limit = 1800.0 if name == "one" else max(180.0, 5 * pair[f"{setting}-one"]["wall_s"])
                        res = timed_pytest([*AUDIT, *flags, "--miqa-cache", str(cache),
                                            "--miqa-report-dir", str(tmp / f"reports-{setting}-{name}"), *extra],
                                           timeout=limit)
                        if not (name == "parallel" and res["timed_out"]):  # a hang is a result, reported in the row
                            check_ran(res, f"audit ({setting}, {name})")
                        pair[f"{setting}-{name}"] = res
                pairs.append(pair)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return pairs


def rows_from(pairs: Sequence[dict[str, Any]], workers: int = 2) -> list[dict]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for setting, label, goal in (("prebuilt", "cold store, checkpoint pre-built", True),
                                 ("cold", "fully cold (checkpoint built in the run)", False)):
        if f"{setting}-one" not in pairs[0]:
            continue
        one = [p[f"{setting}-one"]["wall_s"] for p in pairs]
        par = [p[f"{setting}-parallel"]["wall_s"] for p in pairs]
        hung = sum(p[f"{setting}-parallel"].get("timed_out", False) for p in pairs)
        hang_note = (f"; {hung} of {len(pairs)} parallel runs HUNG and were killed at the time limit (their time is a lower "
                     "bound): a worker polls in Engine.lookup_for for a peer worker that never started its share") if hung else ""
        rows.append(make_row(
            "xdist", f"audit, {label}: -n {workers} vs one process", baseline="one process", candidate=f"-n {workers}",
            baseline_s=one, candidate_s=par, values=[o / p for o, p in zip(one, par)],
            goal_op=">=" if goal else None, goal_value=GOAL_RATIO if goal else None,
            note=f"cpu_count {os.cpu_count()}, load average after the runs {load:.1f}{hang_note}"))
    return rows


def run(repeats: int = 3, workers: int = 2, extra: Sequence[str] = (), cold_too: bool = True) -> list[dict]:
    return rows_from(measure(repeats, workers, extra, cold_too), workers)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="extra pytest arguments")
    args = parser.parse_args(argv)
    return emit(run(args.repeats, args.workers, args.extra), args.json)


if __name__ == "__main__":
    main()
