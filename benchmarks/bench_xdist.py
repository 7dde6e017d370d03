"""Parallelism: the audit with ``-n 2`` against one process, cold cache, on this machine.

    python -m benchmarks.bench_xdist [--repeats 3] [--workers 2] [--json out.json] [-- extra pytest args]

Each repeat runs the default audit (``pytest tests --miqa-data samples``: ``tiny-llava`` and
``sim-paper``) twice back to back, each with a fresh result store: once in one process, once with
``-n <workers>``. Ratio = one-process wall time / parallel wall time (goal >= 1.5x with 2 workers).
The row note gives ``os.cpu_count()`` and the load average before the repeats: on a 2-core
machine shared with other work the parallel run competes with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from .common import check_ran, make_row, tempdir, timed_pytest

GOAL_RATIO = 1.5
AUDIT = ["tests", "--miqa-data", "samples", "-q"]


def measure(repeats: int, workers: int = 2, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    pairs = []
    for _ in range(repeats):
        tmp = tempdir("xdist")
        try:
            pair = {}
            for name, flags in (("one", []), ("parallel", ["-n", str(workers)])):
                res = timed_pytest([*AUDIT, *flags, "--miqa-cache", str(tmp / f"cache-{name}"),
                                    "--miqa-report-dir", str(tmp / f"reports-{name}"), *extra])
                check_ran(res, f"audit ({name})")
                pair[name] = res
            pairs.append(pair)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return pairs


def rows_from(pairs: Sequence[dict[str, Any]], workers: int = 2) -> list[dict]:
    one = [p["one"]["wall_s"] for p in pairs]
    par = [p["parallel"]["wall_s"] for p in pairs]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        make_row("xdist", f"audit: -n {workers} vs one process", baseline="one process", candidate=f"-n {workers}",
                 baseline_s=one, candidate_s=par, values=[o / p for o, p in zip(one, par)], goal_op=">=", goal_value=GOAL_RATIO,
                 note=f"cpu_count {os.cpu_count()}, load average after the runs {load:.1f}")
    ]


def run(repeats: int = 3, workers: int = 2, extra: Sequence[str] = ()) -> list[dict]:
    return rows_from(measure(repeats, workers, extra), workers)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    from .report import format_markdown

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="extra pytest arguments")
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.workers, args.extra)
    print(format_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
