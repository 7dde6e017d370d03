"""Durable result store: one SQLite file (WAL) shared by every worker and concurrent run.

Each finished batch is committed in one transaction, so a run killed at any point keeps every
batch that finished and loses only the one in flight. The primary key is the request's cache key
(``engine.request_key``), so a result is never stored twice. Failed requests (``error`` set) are
kept for the run that made them and retried by later runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from .records import ScoreResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    score REAL,
    method TEXT NOT NULL,
    probs TEXT,
    parse_ok INTEGER NOT NULL,
    raw_text TEXT NOT NULL,
    error TEXT,
    embedding BLOB,
    image_embedding BLOB,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    run_id TEXT NOT NULL,
    worker TEXT NOT NULL,
    beat REAL NOT NULL,
    done INTEGER NOT NULL,
    PRIMARY KEY (run_id, worker)
);
"""


def _blob(array: np.ndarray | None) -> bytes | None:
    return None if array is None else np.asarray(array, dtype=np.float32).tobytes()


def _array(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


class ResultStore:
    """Key -> ScoreResult, persisted in ``<folder>/results.sqlite``."""

    def __init__(self, folder: Path, run_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "results.sqlite"
        self.run_id = run_id
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)

    def get_many(self, keys: Iterable[str], *, need_embedding: Mapping[str, bool] | None = None) -> dict[str, ScoreResult]:
        """Stored, usable results among ``keys``.

        A failed result from another run is not usable (it is retried); nor is one without an
        embedding when ``need_embedding[key]`` is true.
        """
        keys = list(keys)
        found: dict[str, ScoreResult] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, run_id, score, method, probs, parse_ok, raw_text, error, embedding, image_embedding "
                f"FROM results WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, run_id, score, method, probs, parse_ok, raw_text, error, emb, img_emb in rows:
                if error is not None and run_id != self.run_id:
                    continue
                if need_embedding and need_embedding.get(key) and emb is None:
                    continue
                found[key] = ScoreResult(
                    score=float("nan") if score is None else float(score),
                    method=method,
                    probs=tuple(json.loads(probs)) if probs else None,
                    parse_ok=bool(parse_ok),
                    raw_text=raw_text,
                    error=error,
                    embedding=_array(emb),
                    image_embedding=_array(img_emb),
                )
        return found

    def put_many(self, items: Iterable[tuple[str, ScoreResult]]) -> None:
        """Store one batch atomically (all or nothing)."""
        now = time.time()
        rows = [
            (
                key,
                self.run_id,
                None if np.isnan(r.score) else float(r.score),
                r.method,
                json.dumps([float(p) for p in r.probs]) if r.probs is not None else None,
                int(r.parse_ok),
                r.raw_text,
                r.error,
                _blob(r.embedding),
                _blob(r.image_embedding),
                now,
            )
            for key, r in items
        ]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)

    def beat(self, worker: str, *, done: bool = False) -> None:
        """Record that ``worker`` of this run is alive (and whether its planned share is done)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO heartbeats VALUES (?,?,?,?)", (self.run_id, worker, time.time(), int(done))
            )

    def worker_state(self, worker: str) -> tuple[float, bool] | None:
        """(seconds since last beat, done) for a worker of this run, None if it never beat."""
        row = self._db.execute(
            "SELECT beat, done FROM heartbeats WHERE run_id = ? AND worker = ?", (self.run_id, worker)
        ).fetchone()
        return None if row is None else (time.time() - row[0], bool(row[1]))

    def integrity(self) -> tuple[bool, int]:
        """(SQLite integrity check ok, number of stored results)."""
        ok = self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return ok, self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on error (writers queue on the busy timeout)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def default_worker_name() -> str:
    """``gw0``.. under pytest-xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
