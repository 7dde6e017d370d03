"""Adaptive concurrency for served judges: how many requests may be in flight right now.

Additive increase, multiplicative decrease (as TCP does): the limit starts high (``start``,
default min(cap, 64)), is halved when the server says it is overloaded (HTTP 429 or 503, or a
timeout), but not below the number of requests that were in flight before the refused one and
still are (the server holds them: its capacity, so a probe one above it costs one, not half),
and cut by a quarter when the latency (a moving average over about ten answers) rises to
LATENCY_RISE x the best seen (the server queues instead of serving), at most once per window (the
best latency seen, so one burst of refusals is one cut); it grows by one after ``limit`` answers in
a row without trouble, up to ``cap`` (``MIQA_OPENAI_CONCURRENCY``).

A request the server refused waits for one of the requests in flight to finish (the server then
has a free slot) and goes ahead of new requests: one finished request lets one refused request
retry, and new requests wait while refused ones do. Waiting threads are woken one per free slot.
"""

from __future__ import annotations

import threading
import time

#: the limit is multiplied by this when the server says it is overloaded
OVERLOAD_CUT = 0.5
#: latency this many times the best seen counts as rising (queueing at the server)
LATENCY_RISE = 3.0
#: no second cut sooner than this after a cut (seconds), nor sooner than the best latency
MIN_WINDOW_S = 0.05
#: how often a waiting thread looks at its cancel flag (seconds)
_POLL_S = 0.1


class AdaptiveLimit:
    """A semaphore whose size adapts to the server: ``acquire`` before a request, ``release`` after."""

    def __init__(self, cap: int, start: int | None = None) -> None:
        self.cap = max(1, cap)
        self.limit = max(1, min(self.cap, start if start is not None else 64))
        self.in_flight = 0
        self.cuts = 0
        self._best: float | None = None
        self._average: float | None = None
        self._streak = 0
        self._last_cut = -1e9
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # new requests wait here
        self._refused = threading.Condition(lock)  # refused requests wait here
        self._refused_waiting = 0
        self._finished = 0  # requests finished while refused ones waited: one retry each
        self._since: dict[int, float] = {}  # thread holding a slot -> when it took it (monotonic s)

    def acquire(self, cancelled: threading.Event, *, refused_wait_s: float | None = None) -> bool:
        """Wait for a free slot; False (no slot taken) once ``cancelled`` is set.

        ``refused_wait_s``: the request was just refused (429 / 503). It waits for a request in
        flight to finish and retries ahead of new requests; when none finishes within that many
        seconds (nothing else in flight, say), it takes a slot as a new request would.
        """
        with self._cond:
            if refused_wait_s is not None:
                taken = self._after_a_finish(cancelled, time.monotonic() + refused_wait_s)
                if taken is not None:
                    return taken
            while self.in_flight >= self.limit or (refused_wait_s is None and self._refused_waiting):
                if cancelled.is_set():
                    return False
                self._cond.wait(_POLL_S)
            if cancelled.is_set():
                return False
            self._take()
            return True

    def _take(self) -> None:
        self.in_flight += 1
        self._since[threading.get_ident()] = time.monotonic()

    def _after_a_finish(self, cancelled: threading.Event, until: float) -> bool | None:
        """Take a slot once a request finished (True), or False when cancelled, None at ``until``."""
        self._refused_waiting += 1
        try:
            while not (self._finished and self.in_flight < self.limit):
                if cancelled.is_set():
                    return False
                left = until - time.monotonic()
                if left <= 0:
                    return None
                self._refused.wait(min(_POLL_S, left))
            self._finished -= 1
            self._take()
            return True
        finally:
            self._refused_waiting -= 1
            if not self._refused_waiting:
                self._finished = 0
                self._wake()

    def release(self, *, latency_s: float | None, overloaded: bool) -> None:
        """Give the slot back, with what the request showed: its latency when answered (None when
        it failed), ``overloaded`` on 429 / 503 / timeout."""
        with self._cond:
            self.in_flight -= 1
            started = self._since.pop(threading.get_ident(), None)
            now = time.monotonic()
            if overloaded:
                held = 0 if started is None else sum(t < started for t in self._since.values())
                self._cut(now, OVERLOAD_CUT, floor=held)
            else:
                if self._refused_waiting:  # the server has a free slot: one refused request may retry
                    self._finished = min(self._finished + 1, self._refused_waiting)
                if latency_s is not None:
                    self._answered(now, latency_s)
            self._wake()

    def _answered(self, now: float, latency_s: float) -> None:
        if self._best is None or latency_s < self._best:
            self._best = latency_s
        self._average = latency_s if self._average is None else 0.9 * self._average + 0.1 * latency_s
        if self._average > LATENCY_RISE * self._best and self.limit > 1:
            self._cut(now, 0.75)
            self._average = self._best * (LATENCY_RISE + 1) / 2  # judge the new limit afresh
        else:
            self._streak += 1
            if self._streak >= self.limit and self.limit < self.cap:
                self.limit += 1
                self._streak = 0

    def _wake(self) -> None:
        """Wake as many waiting threads as can go now (refused requests first)."""
        free = self.limit - self.in_flight
        if free <= 0:
            return
        if self._refused_waiting:
            if self._finished:
                self._refused.notify(min(free, self._finished))
        else:
            self._cond.notify(free)

    def _cut(self, now: float, factor: float, floor: int = 0) -> None:
        """Multiply the limit by ``factor`` (not below ``floor``), at most once per window."""
        window = max(MIN_WINDOW_S, self._best or 0.0)
        if now - self._last_cut < window:
            return
        self.limit = max(1, int(self.limit * factor), min(floor, self.limit - 1))
        self._last_cut = now
        self._streak = 0
        self.cuts += 1
