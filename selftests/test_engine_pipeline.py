"""The preparation pipeline: pool processes make the condition images and judge inputs ahead of
the judge, and nothing about the results depends on it; an interrupt stops the pool and keeps
the batches already stored."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from miqa_checks.engine.store import ResultStore
from miqa_checks.config import resolve_settings
from miqa_checks.engine import Engine, pipeline
from miqa_checks.engine.prepare import Job, Task
from miqa_checks.matrix import plan_cells

#: every corruption at every severity, attribute prompts and embeddings, on grey and RGB samples
DATASETS = [("samples_ct", "CT"), ("samples_dermoscopy", "dermoscopy")]


def _engine(tmp_path, name: str, model: str = "sim-paper") -> tuple[Engine, list]:
    settings = resolve_settings({"model": [model], "max_images": 5, "batch_size": 16, "cache": str(tmp_path / name)})
    engine = Engine(settings, store=ResultStore(tmp_path / name, "run"), progress=False)
    return engine, plan_cells([model], DATASETS, with_baseline=False)


def _run(tmp_path, name: str, prep: str, monkeypatch) -> Engine:
    monkeypatch.setenv(pipeline.ENV, prep)
    engine, cells = _engine(tmp_path, name)
    engine.prepare(cells)
    for cell in cells:
        engine.lookup_for(cell)
    return engine


def test_pipelined_and_serial_runs_give_identical_scores(tmp_path, monkeypatch):
    serial = _run(tmp_path, "serial", "0", monkeypatch)
    threaded = _run(tmp_path, "thread", "thread", monkeypatch)
    piped = _run(tmp_path, "piped", "2", monkeypatch)
    assert (serial.preparation, threaded.preparation, piped.preparation) == ("inline", "thread", "2 processes")
    rows_serial = serial.score_rows()
    assert len(rows_serial) > 200
    for other in (threaded, piped):
        assert serial.inferred == other.inferred > 200
        assert other.score_rows() == rows_serial  # scores, probabilities, errors, row order
        assert other.result_errors() == serial.result_errors()
        embedded = [k for k in other.used if other._results[k].embedding is not None]
        assert embedded and all((other._results[k].embedding == serial._results[k].embedding).all() for k in embedded)
    for engine in (serial, threaded, piped):
        engine.close()


def _running(worker: object) -> bool:
    """A pool thread or process still running. A process is asked of the kernel: ``is_alive()``
    says True for a child that the pool's own manager thread reaped first (its waitpid then fails)."""
    if isinstance(worker, threading.Thread):
        return worker.is_alive()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X"):  # ended, not yet reaped
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("prep, mode", [("2", "2 processes"), ("thread", "thread")])
def test_an_interrupt_stops_the_pool_and_keeps_the_stored_batches(tmp_path, monkeypatch, prep, mode):
    monkeypatch.setenv(pipeline.ENV, prep)
    engine, cells = _engine(tmp_path, "c", "sim-robust")
    judge = engine.judge("sim-robust")
    real_score = judge.score
    calls: list[int] = []
    pool: list = []

    def score(requests):
        calls.append(len(requests))
        pool.extend(multiprocessing.active_children())
        pool.extend(t for t in threading.enumerate() if t.name.startswith("miqa-prepare"))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_score(requests)

    monkeypatch.setattr(judge, "score", score)
    with pytest.raises(KeyboardInterrupt):
        engine.prepare(cells)
    assert engine.preparation == mode and pool
    for worker in set(pool):
        worker.join(timeout=30)
        assert not _running(worker), f"{worker} outlived the interrupt"
    stored = engine.store.get_many([i.key for i in engine.plan(cells)])
    assert len(stored) == sum(calls[:2]) > 0  # the two scored batches, not the interrupted one
    engine.close()


def test_the_preparation_runs_ahead_as_far_as_its_memory_budget(monkeypatch):
    """While the judge holds a batch, more than two batches are prepared ahead (the lead absorbs a
    slow batch, e.g. a corruption's first use building its tables), up to the budget of source
    image bytes and MAX_AHEAD batches; results come in order."""
    monkeypatch.setattr(pipeline, "AHEAD_BYTES", 10 * 2**20)
    big, small = np.zeros((1024, 1024), np.uint8), np.zeros((8, 8), np.uint8)  # 1 MiB, 64 bytes
    for image, ahead in ((big, 10), (small, pipeline.MAX_AHEAD)):
        jobs = [Job([Task(image)], judge_input=lambda im, i=i: i) for i in range(pipeline.MAX_AHEAD + 20)]
        preparer = pipeline.Preparer(0, threaded=True)
        results = preparer.map(iter(jobs))
        first = next(results)
        assert preparer.in_flight == ahead
        assert [p.judge_input for batch in [first, *results] for p in batch] == list(range(len(jobs)))
        preparer.close()


def test_images_sent_to_a_pool_process_arrive_read_only():
    """A job's images cross to a pool process by pickle; they arrive read-only (as the run's images
    are), so the medical corruptions' digest memo (per read-only image) applies there too."""
    import pickle

    from miqa_checks.conditions import registry

    image = np.arange(48 * 40, dtype=np.uint8).reshape(48, 40)
    image.setflags(write=False)
    job = pickle.loads(pickle.dumps(Job([Task(image, "speckle_noise", 3, {"sigma": 0.2}, 0), Task(error="no")])))
    sent = job.tasks[0].image
    assert np.array_equal(sent, image) and not sent.flags.writeable and job.tasks[1].image is None
    registry.image_digest(sent)
    assert registry._DIGESTS[id(sent)][0]() is sent  # memoised


@pytest.mark.parametrize("prep, committer", [("thread", "miqa-store"), ("0", "MainThread")])
def test_scored_batches_are_committed_off_the_judges_thread(tmp_path, monkeypatch, prep, committer):
    """Pipelined, the store commits a batch on its own thread while the judge scores the next
    (serial: on the caller's); every scored batch is stored by the time prepare() returns."""
    monkeypatch.setenv(pipeline.ENV, prep)
    engine, cells = _engine(tmp_path, "w", "sim-robust")
    real = engine.store.put_many
    threads: list[str] = []

    def put_many(items):
        threads.append(threading.current_thread().name)
        real(items)

    monkeypatch.setattr(engine.store, "put_many", put_many)
    engine.prepare(cells)
    assert len(threads) > 3 and set(threads) == {committer}
    assert len(engine.store.get_many([i.key for i in engine.plan(cells)])) == engine.inferred
    engine.close()
