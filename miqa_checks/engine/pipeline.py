"""The preparation pipeline: batches are prepared ahead while the judge scores the current one.

A bounded queue of batches is kept in flight: preparing them (corruption, the judge's inputs)
runs in a preparation thread or a pool of worker processes, so the next batches are ready when the
judge finishes one. The queue is as deep as memory allows (``AHEAD_BYTES`` of source images, at
least ``MIN_AHEAD`` and at most ``MAX_AHEAD`` batches), so that a slow batch (a corruption's first
use builds its tables) is absorbed by the lead the preparation gained while the judge was busy.
The caller stores each batch as soon as it is scored, so a kill loses at most the batches in flight.

Modes (``MIQA_PREP_WORKERS``): ``auto`` (default): worker processes when the work is large and
there are cores for them, else one thread; ``thread``: one thread; ``0``: no pipelining (prepare
in the caller); ``N``: N worker processes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from .prepare import Job, Prepared, run_job

#: Batches prepared ahead of the judge: always MIN_AHEAD, more while their source images stay within
#: AHEAD_BYTES (a prepared batch holds its condition images too: memory about twice that), at most MAX_AHEAD.
MIN_AHEAD = 2
MAX_AHEAD = 64
AHEAD_BYTES = 256 * 2**20
#: Below this many images to prepare, a process pool does not repay its start (~0.5 s): one thread.
MIN_IMAGES_FOR_PROCESSES = 1024
#: Fewer cores than this per worker: one preparation thread (processes only take cores from the judge).
MIN_CORES_FOR_PROCESSES = 4
ENV = "MIQA_PREP_WORKERS"


def choose(images: int, worker_count: int = 1) -> tuple[int, bool]:
    """(worker processes, threaded) for ``images`` images to prepare: ``cores - 1`` processes when
    the work is large and this worker has MIN_CORES_FOR_PROCESSES cores or more (one is left to the
    judge's own host work), else one thread; ``MIQA_PREP_WORKERS`` overrides (thread, 0: inline,
    N: N processes).

    Measured on 2 shared cores (benchmarks/bench_engine.py, 2026-12-01): one thread overlaps
    preparation with a device-bound judge (wall 1.12 x the device time); on a zero-latency judge
    two processes gave 975 requests/s against the thread's 1 740 (their start-up and pickling,
    1 100 requests per CPU second against 1 780)."""
    setting = os.environ.get(ENV, "auto").strip().lower()
    if setting == "thread":
        return 0, True
    if setting not in ("", "auto"):
        try:
            n = max(0, int(setting))
        except ValueError:
            n = 0
        return n, n > 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = cores // max(1, worker_count)
    return (share - 1 if share >= MIN_CORES_FOR_PROCESSES and images >= MIN_IMAGES_FOR_PROCESSES else 0), True


def _warm_up() -> None:
    """In a pool process: import what the jobs need, so that the first job runs at full speed."""
    from ..conditions import kernels, registry  # noqa: F401


def _child_init(parent: int) -> None:
    """In a pool process: leave Ctrl-C to the parent (it stops the pool), and exit when the parent
    is gone (a SIGKILLed parent cannot stop its pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class Preparer:
    """Runs jobs ahead of their use, results in order; in flight: MIN_AHEAD jobs, more up to
    AHEAD_BYTES of source images and MAX_AHEAD jobs."""

    def __init__(self, processes: int, *, threaded: bool = True) -> None:
        self.processes = processes
        self.in_flight = 0  # jobs submitted and not yet handed to the caller
        self._pool: Executor | None = None
        self._stop = threading.Event()  # a preparation thread drops its job when set
        if processes > 0:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                processes, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init, initargs=(os.getpid(),),
            )
        elif threaded:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="miqa-prepare")

    @property
    def mode(self) -> str:
        return f"{self.processes} processes" if self.processes else ("thread" if self._pool else "inline")

    def map(self, jobs: Iterable[Job]) -> Iterator[list[Prepared]]:
        """``run_job(job)`` for each job, in order, computed ahead (see the class)."""
        if self._pool is None:
            yield from map(run_job, jobs)
            return
        source = iter(jobs)
        if self.processes:  # until a pool process is up (~0.5-1 s), prepare here rather than wait
            warm = [self._pool.submit(_warm_up) for _ in range(self.processes)]
            while not any(f.done() for f in warm):
                job = next(source, None)
                if job is None:
                    return
                yield run_job(job)
        ahead: deque[tuple[Job, Future]] = deque()
        held = 0  # source image bytes in flight
        waiting: Job | None = None  # the next job, when it did not fit

        def refill() -> None:
            nonlocal held, waiting
            while len(ahead) < MAX_AHEAD:
                job = waiting if waiting is not None else next(source, None)
                waiting = None
                if job is None:
                    return
                if len(ahead) >= MIN_AHEAD and held + job.nbytes > AHEAD_BYTES:
                    waiting = job
                    return
                ahead.append((job, self._submit(job)))
                held += job.nbytes
                self.in_flight = len(ahead)

        refill()
        while ahead:
            job, future = ahead.popleft()
            held -= job.nbytes
            self.in_flight = len(ahead)
            try:
                done = future.result()
            except BrokenProcessPool:  # a pool process died (killed, out of memory): go on without the pool
                self.stop()
                done = run_job(job)
                while ahead:
                    yield done
                    job, _ = ahead.popleft()
                    done = run_job(job)
                yield done
                if waiting is not None:
                    yield run_job(waiting)
                yield from map(run_job, source)
                return
            refill()
            yield done

    def _submit(self, job: Job) -> Future:
        """The job's future; a pool that broke already gives a future holding BrokenProcessPool."""
        assert self._pool is not None
        try:
            if self.processes:
                return self._pool.submit(run_job, job)
            return self._pool.submit(run_job, job, self._stop)
        except BrokenProcessPool as exc:
            broken: Future = Future()
            broken.set_exception(exc)
            return broken

    def stop(self) -> None:
        """Stop now: cancel what has not started and end the pool's processes (used on interrupt)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        self._stop.set()
        # ProcessPoolExecutor's processes, read before shutdown() forgets them (it sets _processes to
        # None); Python >= 3.14 has kill_workers()
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()

    def close(self) -> None:
        """Normal end: the pool's processes exit once idle."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
