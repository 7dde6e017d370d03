"""Kill and Ctrl-C campaign: a run SIGKILLed (or interrupted) at a seeded random point resumes to
reports identical to an uninterrupted run, storing nothing twice and recomputing only what was
lost (the batches in flight at the kill).

Each trial: start ``pytest tests`` (own process group), wait for the first stored batch, kill the
whole group after ``random.Random(seed).uniform(0, MAX_DELAY_S)`` seconds, count the rows of
``results.sqlite``, rerun on the same cache and compare with a reference run.
"""

from __future__ import annotations

import signal

import pytest

from audit_runner import run_audit
from campaign import kill_trial, store_state

#: Many small batches (about 1700 requests, batch 16) so that a kill lands mid-computation.
#: The paper profile: the protocol's seven corruptions only, so every stored row is a request the
#: judge answered (the medical set's not-applicable conditions, stored but never inferred, stay out).
ARGS = ("--miqa-model", "sim-paper", "--miqa-profile", "paper", "--miqa-max-images", "6", "--miqa-batch-size", "16")
MAX_DELAY_S = 2.5  # the computation takes about 2 s on one core
TRIALS = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on a cold cache, and its store."""
    tmp = tmp_path_factory.mktemp("kill-ref")
    run = run_audit(tmp, *ARGS, report="ref", cache="ref-cache")
    assert run.returncode in (0, 1), run.output[-3000:]
    state = store_state(tmp / "ref-cache")
    assert state.integrity_ok and state.rows == state.distinct_keys == run.run_info["requests_inferred"] > 1000
    return run, state


def _check_resumed(trial, reference) -> None:
    ref, ref_state = reference
    at_kill, rerun, after = trial.stored_at_kill, trial.rerun, trial.after
    context = f"seed {trial.seed}, kill after {trial.delay_s:.2f} s, {at_kill.rows} rows stored at the kill"
    print(f"\nKILL-TRIAL seed={trial.seed} delay_s={trial.delay_s:.2f} stored_at_kill={at_kill.rows}/{ref_state.rows} "
          f"recomputed={rerun.run_info['requests_inferred']} exit_of_killed_run={trial.killed_exit}")
    assert at_kill.integrity_ok and at_kill.rows == at_kill.distinct_keys, context
    assert rerun.returncode == ref.returncode, context + rerun.output[-3000:]
    # only what the store lacked at the kill (the batches in flight and those not started) is recomputed
    assert rerun.run_info["requests_inferred"] == ref_state.rows - at_kill.rows, context
    # nothing stored twice, nothing lost
    assert after.integrity_ok and after.rows == after.distinct_keys == ref_state.rows, context
    assert after.failed_rows == 0, context
    # reports identical to the uninterrupted run, row for row
    assert rerun.scores == ref.scores, context
    assert rerun.matrix == ref.matrix, context
    assert rerun.csv("errors.csv") == ref.csv("errors.csv"), context
    assert rerun.run_info["interrupted"] is False


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkill_single_process_resumes_identically(tmp_path, reference, seed):
    trial = kill_trial(tmp_path, ARGS, seed=1000 + seed, max_delay_s=MAX_DELAY_S)
    _check_resumed(trial, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(TRIALS))
def test_sigkill_xdist_resumes_identically(tmp_path, reference, seed):
    args = (*ARGS, "-n", "2")
    trial = kill_trial(tmp_path, args, seed=2000 + seed, max_delay_s=MAX_DELAY_S)
    _check_resumed(trial, reference)
    assert trial.rerun.run_info["workers"] == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["single", "xdist"])
def test_ctrl_c_keeps_stored_results_and_reports_the_interruption(tmp_path, reference, workers, sig):
    """SIGINT (a terminal's Ctrl-C) or SIGTERM (CI cancellation, ``timeout``) to the process group
    early in the computation: handled alike."""
    args = (*ARGS, *workers)
    trial = kill_trial(tmp_path, args, seed=3000, max_delay_s=0.5, sig=sig, name="ctrlc")
    assert trial.killed_exit == 2  # pytest: interrupted
    killed = tmp_path / "ctrlc-killed"
    info = (killed / "run.json").read_text()
    assert '"interrupted": true' in info
    assert 'id="interrupted"' in (killed / "summary.html").read_text()
    for name in ("matrix.csv", "scores.csv", "errors.csv", "junit.xml"):
        assert (killed / name).is_file(), name
    assert 0 < trial.stored_at_kill.rows < reference[1].rows  # stored batches stayed
    _check_resumed(trial, reference)
