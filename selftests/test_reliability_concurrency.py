"""Concurrency campaign: several workers, and two runs at once, on one cache folder.

After each: SQLite ``PRAGMA integrity_check`` is ok, every key is stored once, the store holds
exactly the requests of an uninterrupted run (nothing lost), no failed row, and every run's
reports equal the reference run's row for row.
"""

from __future__ import annotations

import pytest

from audit_runner import run_audit
from campaign import start_audit, store_state

#: The paper profile: the protocol's seven corruptions only, so every stored row is a request the
#: judge answered (the medical set's not-applicable conditions, stored but never inferred, stay out).
ARGS = ("--miqa-model", "sim-paper", "--miqa-profile", "paper", "--miqa-max-images", "6", "--miqa-batch-size", "16")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conc-ref")
    run = run_audit(tmp, *ARGS, report="ref", cache="ref-cache")
    state = store_state(tmp / "ref-cache")
    assert state.integrity_ok and state.rows == run.run_info["requests_inferred"] > 1000, run.output[-3000:]
    return run, state


def _same_reports(run, ref) -> None:
    assert run.returncode == ref.returncode, run.output[-3000:]
    assert run.scores == ref.scores
    assert run.matrix == ref.matrix
    assert run.csv("errors.csv") == ref.csv("errors.csv")


def _store_complete(cache, ref_state) -> None:
    state = store_state(cache)
    assert state.integrity_ok
    assert state.rows == state.distinct_keys == ref_state.rows  # no duplicate, no lost result
    assert state.failed_rows == 0


@pytest.mark.slow
def test_four_workers(tmp_path, reference):
    ref, ref_state = reference
    run = start_audit(tmp_path, *ARGS, "-n", "4", report="n4", cache="cache").wait()
    _same_reports(run, ref)
    assert run.run_info["workers"] == 4
    assert run.run_info["requests_inferred"] == ref_state.rows  # each request inferred once across workers
    _store_complete(tmp_path / "cache", ref_state)


@pytest.mark.slow
def test_two_concurrent_runs_on_one_cache(tmp_path, reference):
    ref, ref_state = reference
    first = start_audit(tmp_path, *ARGS, report="first", cache="cache")
    second = start_audit(tmp_path, *ARGS, "-n", "2", report="second", cache="cache")
    runs = [first.wait(), second.wait()]
    for run in runs:
        _same_reports(run, ref)
    _store_complete(tmp_path / "cache", ref_state)
    # together they computed everything at least once (a key both computed is replaced, not duplicated)
    assert sum(r.run_info["requests_inferred"] for r in runs) >= ref_state.rows
    # and a third run on the shared store finds everything
    third = run_audit(tmp_path, *ARGS, report="third", cache="cache")
    _same_reports(third, ref)
    assert third.run_info["requests_inferred"] == 0
