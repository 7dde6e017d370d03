"""Harness overhead: the full default matrix on ``tiny-llava``, cold cache, share of time outside the model.

    python -m benchmarks.bench_overhead [--repeats 3] [--json out.json] [-- extra pytest args]

Each repeat runs ``pytest tests --miqa-model tiny-llava --miqa-data samples`` in a subprocess with a
fresh result store (cold: every request is inferred; the tiny checkpoint is rebuilt into it) and
the benchmark probe plugin (``benchmarks/probe.py``), which times the judge's model calls from
inside: ``TransformersJudge._forward`` (the forward pass), ``_generate`` and ``_image_embeddings``
(the vision-tower call for embeddings). Whole = the subprocess's wall time (interpreter start,
imports, collection, planning, data, corruption, processor, model, store, reports).

Rows: share outside the model calls (goal < 25 %); share outside the whole ``judge.score`` call
(the processor counted on the model side; info); harness milliseconds per inferred request (info).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, Sequence

from .common import check_ran, emit, make_row, run_json, tempdir, timed_pytest

GOAL_SHARE = 0.25
AUDIT = ["tests", "--miqa-model", "tiny-llava", "--miqa-data", "samples", "-q"]


def measure(repeats: int, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    runs = []
    for k in range(repeats):
        tmp = tempdir("overhead")
        try:
            res = timed_pytest([*AUDIT, "--miqa-cache", str(tmp / "cache"), "--miqa-report-dir", str(tmp / "reports"), *extra],
                               probe=tmp / "probe")
            check_ran(res, "overhead audit")
            res["run"] = run_json(tmp / "reports")
            runs.append(res)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return runs


def rows_from(runs: Sequence[dict[str, Any]]) -> list[dict]:
    wall = [r["wall_s"] for r in runs]
    model = [sum(p["model_s"] for p in r["probe"]) for r in runs]
    score = [sum(p["score_s"] for p in r["probe"]) for r in runs]
    processor = [sum(p["processor_s"] for p in r["probe"]) for r in runs]
    inferred = [r["run"]["requests_inferred"] for r in runs]
    outside = [w - m for w, m in zip(wall, model)]
    mid = sorted(range(len(runs)), key=lambda i: outside[i] / wall[i])[len(runs) // 2]
    detail = (f"median run: whole {wall[mid]:.1f} s, model calls {model[mid]:.1f} s, processor {processor[mid]:.1f} s, "
              f"{inferred[mid]} requests inferred")
    return [
        make_row("overhead", "tiny-llava full matrix: outside the model calls", baseline="whole run (wall)",
                 candidate="outside forward / generate / vision-tower calls", baseline_s=wall, candidate_s=outside,
                 values=[o / w for o, w in zip(outside, wall)], unit="%", goal_op="<=", goal_value=GOAL_SHARE, note=detail),
        make_row("overhead", "tiny-llava full matrix: outside judge.score", baseline="whole run (wall)",
                 candidate="outside judge.score (processor on the model side)", baseline_s=wall,
                 candidate_s=[w - s for w, s in zip(wall, score)], values=[(w - s) / w for w, s in zip(wall, score)], unit="%"),
        make_row("overhead", "harness time per inferred request", baseline="-", candidate="outside model calls / requests",
                 baseline_s=None, candidate_s=None, values=[1000 * o / max(1, n) for o, n in zip(outside, inferred)], unit="ms",
                 note="what a real model's per-request forward time must exceed for the harness share to drop under 25 %: 3x this"),
    ]


def run(repeats: int = 3, extra: Sequence[str] = ()) -> list[dict]:
    return rows_from(measure(repeats, extra))


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="extra pytest arguments")
    args = parser.parse_args(argv)
    return emit(run(args.repeats, args.extra), args.json)


if __name__ == "__main__":
    main()
