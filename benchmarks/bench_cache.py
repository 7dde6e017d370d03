"""Result store: the default audit cold against warm (everything stored).

    python -m benchmarks.bench_cache [--repeats 3] [--json out.json] [-- extra pytest args]

Each repeat: a fresh store and report folder; the cold run (``pytest tests``, default models
``tiny-llava`` and ``sim-paper``, ``samples``) computes and stores every request and draws the
plots; the warm run, same command, store and report folder (as a user reruns it), must find
everything stored and redraws no plot whose inputs did not change. Both run in subprocesses with
the benchmark probe plugin (``benchmarks/probe.py``), which also breaks the warm floor down by
part (start-up, collection, engine and its data loading, tests, reports and their plots).

Python's bytecode cache is on in these subprocesses (``PYTHONDONTWRITEBYTECODE`` cleared), as on a
user's machine: with it off (this sandbox sets it), every run compiles the package again and pytest
rewrites the assertions of every module of the plugin's package, about 2 s of each run.

Proof of "no model load when warm": the warm run's ``run.json`` says ``requests_inferred == 0``
and the probe counted no ``TransformersJudge._load`` that loaded weights (``model_loads == 0``,
also on every xdist worker). Whether torch was imported at all in the warm run is in the note
(the judge identity needs the device and dtype, which asks torch).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, Sequence

from .common import check_ran, emit, make_row, run_json, tempdir, timed_pytest

GOAL_RATIO = 10.0
CMD = ["tests", "--miqa-data", "samples", "-q"]
#: Python's default: bytecode cached (the sandbox's PYTHONDONTWRITEBYTECODE=1 cleared for the runs)
ENV = {"PYTHONDONTWRITEBYTECODE": ""}
PARTS = ("start-up", "collection", "engine: data loading", "engine: plan, keys, store look-ups",
         "test bodies and teardown", "reports: plots", "reports: other")


def measure(repeats: int, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    pairs = []
    for _ in range(repeats):
        tmp = tempdir("cache")
        try:
            pair = {}
            for phase in ("cold", "warm"):
                res = timed_pytest([*CMD, "--miqa-cache", str(tmp / "cache"), "--miqa-report-dir", str(tmp / "reports"), *extra],
                                   probe=tmp / f"probe-{phase}", env=ENV)
                check_ran(res, f"cache {phase}")
                res["run"] = run_json(tmp / "reports")
                pair[phase] = res
            pair["plain"] = plain_pytest(tmp, pair["warm"]["probe"][0]["items"])
            pairs.append(pair)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return pairs


def plain_pytest(tmp: Path, items: int) -> dict[str, Any]:
    """Plain pytest (no plugin) running as many trivial tests as the audit has: pytest's own floor."""
    folder = tmp / "plain"
    folder.mkdir()
    (folder / "test_plain.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({items}))\ndef test_trivial(i):\n    pass\n")
    res = timed_pytest([str(folder), "-q", "-p", "no:miqa", "--rootdir", str(folder)], cwd=folder, env=ENV)
    check_ran(res, "plain pytest", ok=(0,))
    return {**res, "items": items}


def parts(res: dict[str, Any]) -> dict[str, float]:
    """Seconds per part of one single-process run (probe timings; the rest of the wall is start-up)."""
    (p,) = [x for x in res["probe"] if x["worker"] == "main"]
    before_probe = res["wall_s"] - p["session_s"]
    out = {
        "start-up": before_probe + p["configure_s"],
        "collection": p["collection_done_s"] - p["configure_s"],
        "engine: data loading": p["data_s"],
        "engine: plan, keys, store look-ups": p["engine_s"] - p["data_s"],
        "reports: plots": p["plots_s"],
        "reports: other": p["finish_s"] - p["plots_s"],
    }
    out["test bodies and teardown"] = res["wall_s"] - sum(out.values())
    return out


def rows_from(pairs: Sequence[dict[str, Any]]) -> list[dict]:
    cold = [p["cold"]["wall_s"] for p in pairs]
    warm = [p["warm"]["wall_s"] for p in pairs]
    warm_inferred = [p["warm"]["run"]["requests_inferred"] for p in pairs]
    warm_loads = [sum(x["model_loads"] for x in p["warm"]["probe"]) for p in pairs]
    cold_inferred = [p["cold"]["run"]["requests_inferred"] for p in pairs]
    torch_warm = any(x["torch_at_end"] for p in pairs for x in p["warm"]["probe"])
    no_load = all(n == 0 for n in warm_inferred) and all(n == 0 for n in warm_loads)
    row = make_row(
        "cache", "default audit: cold vs warm", baseline="cold (empty store)", candidate="warm (all stored)",
        baseline_s=cold, candidate_s=warm, values=[c / w for c, w in zip(cold, warm)], goal_op=">=", goal_value=GOAL_RATIO,
        note=f"cold inferred {cold_inferred[0]} requests; warm: requests_inferred {warm_inferred}, model loads {warm_loads}; "
        f"torch imported when warm: {'yes' if torch_warm else 'no'}; bytecode cache on",
    )
    proof = make_row(
        "cache", "warm run loads no model", baseline="-", candidate="requests_inferred == 0 and no model load",
        baseline_s=None, candidate_s=None, values=[1.0 if no_load else 0.0], unit="bool", goal_op=">=", goal_value=1.0,
        note="run.json requests_inferred and the probe's TransformersJudge._load counter, every process",
    )
    warm_parts = [parts(p["warm"]) for p in pairs]
    floor = [
        make_row("cache", f"warm floor: {name}", baseline="-", candidate="warm run", baseline_s=None, candidate_s=None,
                 values=[w[name] for w in warm_parts], unit="s",
                 note=f"share of the warm wall {sum(w[name] for w in warm_parts) / sum(warm):.0%}")
        for name in PARTS
    ]
    floor.append(make_row(
        "cache", "warm floor: plain pytest running as many trivial tests", baseline="-", candidate="pytest -p no:miqa",
        baseline_s=None, candidate_s=None, values=[p["plain"]["wall_s"] for p in pairs], unit="s",
        note=f"{pairs[0]['plain']['items']} tests (the audit's items): what pytest itself costs, "
        f"{sum(p['plain']['wall_s'] for p in pairs) / sum(warm):.0%} of the warm wall"))
    return [row, proof, *floor]


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
