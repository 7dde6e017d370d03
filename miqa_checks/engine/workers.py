"""Work sharing under pytest-xdist: who computes a key, whether a peer is still alive, heartbeats.

Each worker computes the batches it owns (``plan.share_out``) and reads the others' results from
the shared store. A worker beats every few seconds while it computes its share and marks the
share done at the end; a peer that stops beating (or never starts) is presumed dead and its keys
are computed by whoever needs them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .store import ResultStore

#: A worker whose heartbeat is older than this is presumed dead; its keys are computed by others.
STALE_AFTER_S = 60.0
HEARTBEAT_EVERY_S = 5.0


class Peers:
    """Which worker owns a key, and whether a peer can still deliver its share."""

    def __init__(self, store: ResultStore, worker_count: int) -> None:
        self.store = store
        self.worker_count = max(1, worker_count)
        self._owners: dict[str, int] = {}  # request key -> worker index of its planned batch
        self._waiting_since: dict[str, float] = {}  # peer worker -> when we first found it absent

    def assign(self, keys: list[str], owner: int) -> None:
        self._owners.update((k, owner) for k in keys)

    def owner(self, key: str) -> int:
        """The worker computing ``key``: the owner of its batch once planned, else by key hash."""
        owner = self._owners.get(key)
        return owner if owner is not None else int(key[:8], 16) % self.worker_count

    def alive(self, worker: str) -> bool:
        """A peer still computing its share: beating recently, or not started for < STALE_AFTER_S."""
        state = self.store.worker_state(worker)
        if state is None:  # not started yet; a peer that never starts is given up on
            first_wait = self._waiting_since.setdefault(worker, time.monotonic())
            return time.monotonic() - first_wait < STALE_AFTER_S
        age, done = state
        return not done and age < STALE_AFTER_S


class Heartbeat:
    """Beats for a worker every few seconds on its own connection; marks the share done on exit."""

    def __init__(self, folder: Path, run_id: str, worker: str) -> None:
        self.store = ResultStore(folder, run_id)
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            self.store.beat(self.worker)

    def __enter__(self) -> "Heartbeat":
        self.store.beat(self.worker)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.beat(self.worker, done=True)
        self.store.close()
