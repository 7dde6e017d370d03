"""Committing scored batches on a thread of their own, so that the judge's thread goes back to the
device while the previous batch is written (SQLite releases the GIL while it writes)."""

from __future__ import annotations

import queue
import threading

from ..records import ScoreResult
from .store import ResultStore

#: Scored batches waiting for their commit (memory: this many batches of results).
QUEUE = 2


class StoreWriter:
    """``put(items)`` queues one scored batch for ``store.put_many`` (a batch is committed whole or
    not at all); ``close()`` returns once every queued batch is committed and re-raises the first
    commit error (later batches are then dropped, as an inline commit's error would have ended the
    run there)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self._queue: queue.Queue[list[tuple[str, ScoreResult]] | None] = queue.Queue(maxsize=QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="miqa-store", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (items := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.store.put_many(items)
                except BaseException as exc:  # noqa: BLE001 - handed to the engine's thread by close()/put()
                    self._error = exc

    def put(self, items: list[tuple[str, ScoreResult]]) -> None:
        """Queue a batch (waits while QUEUE batches are waiting); raises an earlier commit's error."""
        self._raise()
        self._queue.put(items)

    def close(self) -> None:
        """Wait for every queued batch to be committed; raise the first commit error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
