"""Adaptive concurrency for served judges: how many requests may be in flight right now.

Additive increase, multiplicative decrease (as TCP does): the limit starts high (``start``,
default min(cap, 64)), is halved when the server says it is overloaded (HTTP 429 or 503, or a
timeout) and cut by a quarter when the latency (a moving average over about ten answers) rises to
LATENCY_RISE x the best seen (the server queues instead of serving), at most once per window (the
best latency seen, so one burst of refusals is one cut); it grows by one after ``limit`` answers in
a row without trouble, up to ``cap`` (``MIQA_OPENAI_CONCURRENCY``).
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
        self._cond = threading.Condition()

    def acquire(self, cancelled: threading.Event) -> bool:
        """Wait for a free slot; False (no slot taken) once ``cancelled`` is set."""
        with self._cond:
            while self.in_flight >= self.limit:
                if cancelled.is_set():
                    return False
                self._cond.wait(0.1)
            if cancelled.is_set():
                return False
            self.in_flight += 1
            return True

    def release(self, *, latency_s: float | None, overloaded: bool) -> None:
        """Give the slot back, with what the request showed: its latency when answered (None when
        it failed), ``overloaded`` on 429 / 503 / timeout."""
        with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            if overloaded:
                self._cut(now, OVERLOAD_CUT)
            elif latency_s is not None:
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
            self._cond.notify_all()

    def _cut(self, now: float, factor: float) -> None:
        window = max(MIN_WINDOW_S, self._best or 0.0)
        if now - self._last_cut < window:
            return
        self.limit = max(1, int(self.limit * factor))
        self._last_cut = now
        self._streak = 0
        self.cuts += 1
