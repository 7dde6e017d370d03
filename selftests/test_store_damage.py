"""The result store under damage: a truncated or random file, damaged rows, a read-only store,
several processes opening one damaged store at once, and runaway answers.

Each test checks that nothing stored and valid is lost, that what is damaged is served as missing
(so it is recomputed), and that a moved-aside file is where the warning says.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from audit_runner import REPO, run_audit
from miqa_checks.engine.store import ResultStore, StoreWarning
from miqa_checks.records import TEXT_CAP, ScoreResult

N = 400


def _result(i: int) -> ScoreResult:
    """Alternately an ``expected`` result with probs and embeddings and a parsed ``generate`` one."""
    if i % 2:
        return ScoreResult(score=float(1 + i % 5), method="generate", raw_text=f"I rate it {1 + i % 5}/5.")
    probs = np.full(5, 0.2)
    return ScoreResult(score=3.0, method="expected", probs=tuple(probs), embedding=np.arange(8, dtype=np.float32) + i,
                       image_embedding=np.ones(4, dtype=np.float32))


def _same(a: ScoreResult, b: ScoreResult) -> bool:
    def arr(x):
        return None if x is None else x.tolist()

    return (a.score, a.method, a.probs, a.parse_ok, a.raw_text, a.error, arr(a.embedding), arr(a.image_embedding)) == (
        b.score, b.method, b.probs, b.parse_ok, b.raw_text, b.error, arr(b.embedding), arr(b.image_embedding))


def _filled(folder: Path, n: int = N) -> dict[str, ScoreResult]:
    results = {f"k{i:05d}": _result(i) for i in range(n)}
    store = ResultStore(folder, "run-a")
    store.put_many(results.items())
    store.close()  # checkpoints the WAL into results.sqlite
    return results


def _aside(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("results.sqlite.damaged-") and p.name[-4:] not in ("-wal", "-shm"))


def _open_warned(folder: Path, run_id: str = "run-b") -> tuple[ResultStore, str]:
    with pytest.warns(StoreWarning) as caught:
        store = ResultStore(folder, run_id)
    return store, str(caught[0].message)


def test_truncated_store_is_moved_aside_and_its_readable_rows_kept(tmp_path):
    results = _filled(tmp_path)
    path = tmp_path / "results.sqlite"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    store, message = _open_warned(tmp_path)
    (aside,) = _aside(tmp_path)
    assert aside.stat().st_size == size // 2 and aside.name in message and str(tmp_path) in message
    assert aside.name in store.notes[0] and str(tmp_path) not in store.notes[0]
    served = store.get_many(results)
    assert 0 < len(served) < N  # what SQLite could still read is kept ...
    assert all(_same(served[k], results[k]) for k in served)  # ... and is what was stored
    store.put_many([(k, results[k]) for k in results if k not in served])  # the rest is recomputed
    assert store.integrity() == (True, N)
    assert len(store.get_many(results)) == N
    store.close()


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + os.urandom(5000), os.urandom(160_000)], ids=["empty", "header-then-noise", "random"])
def test_unreadable_store_starts_fresh(tmp_path, content):
    (tmp_path / "results.sqlite").write_bytes(content)
    if content:
        store, message = _open_warned(tmp_path)
        (aside,) = _aside(tmp_path)
        assert aside.read_bytes() == content and aside.name in message
    else:  # an empty file is an empty database, not damage
        store = ResultStore(tmp_path, "run-b")
        assert store.notes == [] and _aside(tmp_path) == []
    store.put_many([("k", _result(0))])
    assert store.integrity() == (True, 1) and _same(store.get_many(["k"])["k"], _result(0))
    store.close()


def test_foreign_sqlite_file_is_moved_aside(tmp_path):
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute("CREATE TABLE results (a, b)")
    db.execute("INSERT INTO results VALUES (1, 2)")
    db.commit()
    db.close()
    store, message = _open_warned(tmp_path)
    assert "not a result store" in message and len(_aside(tmp_path)) == 1
    store.put_many([("k", _result(0))])
    assert store.integrity() == (True, 1)
    store.close()


DAMAGE = {
    "text score": "UPDATE results SET score = 'abc' WHERE key = ?",
    "score above 5": "UPDATE results SET score = 9 WHERE key = ?",
    "score below 1": "UPDATE results SET score = 0.5 WHERE key = ?",
    "infinite score": "UPDATE results SET score = 1e999 WHERE key = ?",
    "invalid JSON probs": "UPDATE results SET probs = '[0.2, 0.2' WHERE key = ?",
    "probs of 4 levels": "UPDATE results SET probs = '[0.25, 0.25, 0.25, 0.25]' WHERE key = ?",
    "torn embedding": "UPDATE results SET embedding = X'010203' WHERE key = ?",
    "empty image embedding": "UPDATE results SET image_embedding = X'' WHERE key = ?",
    "text embedding": "UPDATE results SET embedding = 'abcd' WHERE key = ?",
    "score on a failed row": "UPDATE results SET error = 'boom', score = 3 WHERE key = ?",
}
GENERATE_DAMAGE = {
    "score its answer does not give": "UPDATE results SET score = 2 WHERE key = ?",
    "null raw text": "UPDATE results SET raw_text = 4 WHERE key = ?",
}


def test_invalid_rows_are_served_as_missing_and_the_rest_kept(tmp_path):
    results = _filled(tmp_path, 40)
    expected_keys = [k for i, k in enumerate(results) if i % 2 == 0]
    generate_keys = [k for i, k in enumerate(results) if i % 2 == 1 and results[k].score != 2.0]
    damaged = dict(zip(expected_keys, DAMAGE.values())) | dict(zip(generate_keys, GENERATE_DAMAGE.values()))
    db = sqlite3.connect(tmp_path / "results.sqlite")
    for key, sql in damaged.items():
        assert db.execute(sql, (key,)).rowcount == 1
    db.commit()
    db.close()
    store = ResultStore(tmp_path, "run-b")
    served = store.get_many(results)
    assert set(served) == set(results) - set(damaged)
    assert all(_same(served[k], results[k]) for k in served)
    store.put_many([(k, results[k]) for k in damaged])  # recomputed, replacing the damaged rows
    assert len(store.get_many(results)) == len(results) and store.integrity() == (True, len(results))
    store.close()


def test_out_of_range_generate_answer_is_a_valid_result(tmp_path):
    """A parsed "7/10" is what the model said (output_validity counts it): kept, not recomputed."""
    store = ResultStore(tmp_path, "run-a")
    store.put_many([("k", ScoreResult(score=7.0, method="generate", raw_text="7/10"))])
    assert store.get_many(["k"])["k"].score == 7.0
    store.close()


def test_runaway_answer_is_stored_cut(tmp_path):
    answer = "The image is fine. " * 1_600_000 + "Rating: 2/5"  # ~30 MB
    result = ScoreResult(score=2.0, method="generate", raw_text=answer)
    assert len(result.raw_text) < TEXT_CAP + 40 and result.raw_text.endswith(f"…[cut, {len(answer)} chars]")
    assert ScoreResult.failed("generate", "x" * 10**6).error.endswith("…[cut, 1000000 chars]")
    store = ResultStore(tmp_path, "run-a")
    store.put_many([("k", result)])
    back = store.get_many(["k"])["k"]
    assert back.raw_text == result.raw_text and back.score == 2.0  # served: no recompute on every run
    store.close()
    assert (tmp_path / "results.sqlite").stat().st_size < 100_000


@contextmanager
def _read_only(*paths: Path) -> Iterator[None]:
    """Make files and folders unwritable even for root (``chattr +i``); chmod for other users."""
    root = os.geteuid() == 0
    for p in paths:
        if root:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("cannot make a file read-only for root here (chattr +i refused)")
        else:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
    try:
        yield
    finally:
        for p in reversed(paths):
            if root:
                subprocess.run(["chattr", "-i", str(p)], check=True)
            else:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)


def test_read_only_store_serves_a_warm_run(tmp_path):
    folder = tmp_path / "ro"
    results = _filled(folder, 50)
    before = (folder / "results.sqlite").read_bytes()
    with _read_only(folder / "results.sqlite", folder):
        store = ResultStore(folder, "run-ro")  # no warning: everything needed is there
        assert store.read_only and store.notes == []
        served = store.get_many(results)
        assert set(served) == set(results) and all(_same(served[k], results[k]) for k in served)
        with pytest.warns(StoreWarning, match="throw-away"):
            store.put_many([("new", _result(3))])  # something had to be computed: said once
        store.put_many([("new2", _result(5))])
        store.beat("main", done=True)
        assert len(store.get_many(["new", "new2", *results])) == len(results) + 2
        assert store.worker_state("main")[1] is True
        peer = ResultStore(folder, "run-ro")  # another worker of the run sees the same throw-away store
        assert len(peer.get_many(["new", "new2"])) == 2 and peer.worker_state("main")[1] is True
        assert len(store.notes) == 1 and "not kept" in store.error_records()[0]["reason"]
        store.close()
        peer.close()
        assert (folder / "results.sqlite").read_bytes() == before


_OPEN_AND_PUT = textwrap.dedent(
    """
    import sys, warnings
    from pathlib import Path
    from miqa_checks.engine.store import ResultStore
    from miqa_checks.records import ScoreResult
    warnings.simplefilter("ignore")
    store = ResultStore(Path(sys.argv[1]), "run-c")
    store.put_many([(sys.argv[2], ScoreResult(score=4.0, method="expected"))])
    store.close()
    """
)


def test_processes_opening_one_damaged_store_at_once(tmp_path):
    results = _filled(tmp_path)
    with open(tmp_path / "results.sqlite", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_PUT, str(tmp_path), f"w{i}"], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    assert len(_aside(tmp_path)) == 1  # moved aside once, not once per process
    store = ResultStore(tmp_path, "run-d")
    assert len(store.get_many([f"w{i}" for i in range(4)])) == 4  # no process wrote into a file moved aside later
    served = store.get_many(results)
    assert 0 < len(served) < len(results) and all(_same(served[k], results[k]) for k in served)
    assert store.integrity()[0]
    store.close()


AUDIT = ("--miqa-model", "sim-robust", "--miqa-max-images", "5", "-k", "pixelation")


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store-healthy")
    run = run_audit(tmp, *AUDIT)
    assert run.returncode == 0, run.output[-3000:]
    return tmp, run


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_audit_on_a_damaged_store_completes(tmp_path, healthy, damage):
    ref_tmp, ref = healthy
    cache = tmp_path / "cache"
    cache.mkdir()
    stored = (ref_tmp / "cache" / "results.sqlite").read_bytes()
    (cache / "results.sqlite").write_bytes(stored[: len(stored) // 2] if damage == "truncated" else os.urandom(len(stored)))
    run = run_audit(tmp_path, *AUDIT)
    assert run.returncode == ref.returncode, run.output[-3000:]
    assert run.matrix == ref.matrix and run.scores == ref.scores
    (aside,) = _aside(cache)
    store_errors = [e for e in run.csv("errors.csv") if e["stage"] == "store"]
    assert len(store_errors) == 1 and aside.name in store_errors[0]["reason"]
    assert aside.name in run.output  # the warning says where
    rerun = run_audit(tmp_path, *AUDIT, report="warm")
    assert rerun.returncode == ref.returncode and rerun.run_info["requests_inferred"] == 0


def test_audit_on_rows_with_bad_scores_recomputes_them(tmp_path, healthy):
    ref_tmp, ref = healthy
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "results.sqlite").write_bytes((ref_tmp / "cache" / "results.sqlite").read_bytes())
    db = sqlite3.connect(cache / "results.sqlite")
    db.execute("UPDATE results SET score = 9 WHERE rowid % 7 = 0")
    db.execute("UPDATE results SET score = 'abc' WHERE rowid % 7 = 1")
    db.execute("UPDATE results SET probs = '{' WHERE rowid % 7 = 2")
    db.execute("UPDATE results SET embedding = X'00' WHERE rowid % 7 = 3 AND embedding IS NOT NULL")
    damaged = db.total_changes
    db.commit()
    db.close()
    run = run_audit(tmp_path, *AUDIT)
    assert run.returncode == ref.returncode, run.output[-3000:]
    assert run.matrix == ref.matrix and run.scores == ref.scores
    assert run.run_info["requests_inferred"] == damaged


def test_audit_on_a_read_only_store(tmp_path, healthy):
    ref_tmp, ref = healthy
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "results.sqlite").write_bytes((ref_tmp / "cache" / "results.sqlite").read_bytes())
    with _read_only(cache / "results.sqlite", cache):
        warm = run_audit(tmp_path, *AUDIT, report="warm")  # the store holds everything: served read-only
        assert warm.returncode == ref.returncode, warm.output[-3000:]
        assert warm.run_info["requests_inferred"] == 0 and warm.scores == ref.scores and warm.matrix == ref.matrix
        assert [e for e in warm.csv("errors.csv") if e["stage"] == "store"] == []
        more = run_audit(tmp_path, "--miqa-model", "sim-robust", "--miqa-max-images", "6", "-k", "pixelation", report="more")
        assert more.returncode == ref.returncode, more.output[-3000:]
        assert 0 < more.run_info["requests_inferred"] < more.run_info["requests_used"]  # only the 6th image computed
        (note,) = [e for e in more.csv("errors.csv") if e["stage"] == "store"]
        assert "not kept" in note["reason"] and "throw-away" in more.output
