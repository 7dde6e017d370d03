"""Durable result store: one SQLite file (WAL) shared by every worker and concurrent run.

Each finished batch is committed in one transaction, so a run killed at any point keeps every
batch that finished and loses only the one in flight. The primary key is the request's cache key
(``engine.keys.request_key``), so a result is never stored twice. Failed requests (``error`` set) are
kept for the run that made them and retried by later runs, except a condition that does not apply
to the image (e.g. saturate on a grey image), which the key alone decides.

Damage never stops a run. At open (once per process and file, under a lock file so that workers
do not race) the file is checked; a file SQLite cannot read is moved aside as
``results.sqlite.damaged-<UTC time>`` after its readable, valid rows are copied into a fresh
store. A row that is not a valid result (text score, bad JSON probs, a torn embedding, a score
its own answer does not give) is served as missing, so it is recomputed and overwritten. A store
that cannot be written serves what it holds read-only; what must be computed goes to a throw-away
store shared by the run's workers. Each such event is a warning and an entry of :attr:`ResultStore.notes`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote

import numpy as np

from ..prompts import parse_rating
from ..records import CONDITION_FAILED, NOT_APPLICABLE, ScoreResult, is_cut

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

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
COLUMNS = ("key", "run_id", "score", "method", "probs", "parse_ok", "raw_text", "error", "embedding", "image_embedding", "created")
_TABLES = {"results": COLUMNS, "heartbeats": ("run_id", "worker", "beat", "done")}
_SELECT = "SELECT key, run_id, score, method, probs, parse_ok, raw_text, error, embedding, image_embedding FROM results"
#: SQLite primary result codes of a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES = (11, 26)
#: Files this process already checked, as (path, inode, size, mtime): a second connection to an
#: unchanged file (the heartbeat's) skips the check.
_CHECKED: set[tuple[str, int, int, int]] = set()


class StoreWarning(UserWarning):
    """The result store was damaged or cannot be written; the run went on (the message says how)."""


def _blob(array: np.ndarray | None) -> bytes | None:
    return None if array is None else np.asarray(array, dtype=np.float32).tobytes()


def _array(blob: Any) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


def _is_damage(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _DAMAGE_CODES


def _real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _valid_probs(text: Any) -> tuple[float, ...] | None | bool:
    """The probs tuple, None when absent, False when not 5 probabilities in [0, 1]."""
    if text is None:
        return None
    try:
        values = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return False
    if not isinstance(values, list) or len(values) != 5 or not all(_real(p) and -1e-6 <= p <= 1 + 1e-6 for p in values):
        return False
    return tuple(float(p) for p in values)


#: What a text of plain JSON numbers in lists may hold (anything else is checked row by row)
_NUMERIC = frozenset("0123456789.-+eE,[] ")


def _many_probs(texts: list[Any]) -> list[tuple[float, ...] | None | bool]:
    """:func:`_valid_probs` of each text: one JSON parse and one array check for all of them (a
    warm run reads every stored row), row by row when any text is not one list of plain numbers
    or the lot is not 5 numbers per text."""
    present = [t for t in texts if t is not None]
    if not present:
        return [None] * len(texts)
    try:
        joined = ",".join(present)
        if not _NUMERIC.issuperset(joined) or not all(t.count("[") == 1 == t.count("]") for t in present):
            raise ValueError("not one list of plain numbers per text")
        values = np.array(json.loads(f"[{joined}]"), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return [_valid_probs(t) for t in texts]
    if values.shape != (len(present), 5):
        return [_valid_probs(t) for t in texts]
    ok = (np.isfinite(values) & (values >= -1e-6) & (values <= 1 + 1e-6)).all(axis=1).tolist()
    parsed = iter([tuple(v) if good else False for v, good in zip(values.tolist(), ok)])
    return [None if t is None else next(parsed) for t in texts]


def _valid_blob(blob: Any) -> bool:
    return blob is None or (isinstance(blob, bytes) and len(blob) > 0 and len(blob) % 4 == 0)


def not_applicable(error: Any) -> bool:
    """Whether a stored failure says the condition does not apply to the image: an answer fixed
    by the key (the image and the condition), usable by every run; other failures are retried."""
    return isinstance(error, str) and error.startswith(CONDITION_FAILED) and error.endswith(NOT_APPLICABLE)


def answer_gives(raw_text: str, score: float) -> bool:
    """Whether the parse rule gives ``score`` on the answer ``raw_text`` (on an answer cut at the
    cap, also when the rating lies in the part cut off)."""
    return parse_rating(raw_text) in ((None, score) if is_cut(raw_text) else (score,))


def result_from_row(row: tuple) -> ScoreResult | None:
    """A stored row (``_SELECT`` order, without the key) as a ScoreResult; None when it is not a
    valid result and must be treated as missing.

    Valid: text fields are text; probs absent or 5 probabilities; embeddings whole float32 arrays;
    the score is NULL (no score) or, for an answer that neither failed nor went unparsed, finite
    and, for ``expected`` scoring, on the 1..5 scale. A parsed ``generate`` score must be what the parse rule
    gives on its stored answer (a rating out of range, e.g. "7/10", is a real answer and is kept).
    """
    return _result(row, _valid_probs(row[3]))


def _result(row: tuple, probs_t: tuple[float, ...] | None | bool) -> ScoreResult | None:
    """:func:`result_from_row` with the row's probs already checked (``probs_t``, see :func:`_valid_probs`)."""
    _run_id, score, method, _probs, parse_ok, raw_text, error, emb, img_emb = row
    if not (isinstance(method, str) and isinstance(raw_text, str) and (error is None or isinstance(error, str))):
        return None
    if parse_ok not in (0, 1) or not (_valid_blob(emb) and _valid_blob(img_emb)):
        return None
    if probs_t is False:
        return None
    if score is None:
        pass
    elif not _real(score) or error is not None or parse_ok != 1:
        return None
    elif method == "expected" and not 1.0 <= score <= 5.0:
        return None
    elif method == "generate" and not answer_gives(raw_text, float(score)):
        return None
    return ScoreResult(
        score=math.nan if score is None else float(score),
        method=method,
        probs=probs_t,
        parse_ok=bool(parse_ok),
        raw_text=raw_text,
        error=error,
        embedding=_array(emb),
        image_embedding=_array(img_emb),
    )


def _connect(path: Path, *, read_only: bool = False, immutable: bool = False) -> sqlite3.Connection:
    if read_only:
        uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")
        db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
    else:
        db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 60000")
    return db


def _identity(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


def _problem(db: sqlite3.Connection) -> str | None:
    """Why the open file is not a usable store (damage or a foreign schema); None when it is.

    Raises the sqlite3 error when the file cannot be read for another reason (e.g. permissions)."""
    try:
        check = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            return f"damaged ({'; '.join(check[:3])})"
        for table, columns in _TABLES.items():
            found = tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
            if found and found != columns:
                return f"not a result store (table {table} has columns {', '.join(found)})"
    except sqlite3.DatabaseError as exc:
        if _is_damage(exc):
            return f"damaged ({exc})"
        raise
    return None


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``<folder>/results.sqlite.lock`` (none where it cannot be made)."""
    try:
        fd = os.open(folder / "results.sqlite.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        fd = None
    try:
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _salvage(damaged: Path, fresh: sqlite3.Connection) -> int:
    """Copy the valid rows SQLite can still read from ``damaged`` into ``fresh``; their number.

    Read as it is, then from a copy whose header is made to match the file's length (SQLite
    refuses a truncated file whole; the copy serves the pages still there).
    """
    _copy_rows(damaged, fresh)
    patched = _header_fixed_copy(damaged)
    if patched is not None:
        try:
            _copy_rows(patched, fresh)
        finally:
            patched.unlink(missing_ok=True)
    return fresh.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def _header_fixed_copy(damaged: Path) -> Path | None:
    """A copy of a damaged SQLite file with the page count of its length and no WAL; None if it has no SQLite header."""
    try:
        with open(damaged, "rb") as f:
            header = f.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return None
        page_size = int.from_bytes(header[16:18], "big") or 1
        page_size = 65536 if page_size == 1 else page_size
        pages = damaged.stat().st_size // page_size
        copy = damaged.with_name(f"{damaged.name}.salvage-{os.getpid()}")
        shutil.copyfile(damaged, copy)
        with open(copy, "r+b") as f:
            f.truncate(pages * page_size)
            f.seek(18)
            f.write(b"\x01\x01")  # rollback journal, not WAL: readable without -wal / -shm
            f.seek(28)
            f.write(pages.to_bytes(4, "big"))
        return copy
    except OSError:
        return None


def _copy_rows(source: Path, fresh: sqlite3.Connection) -> None:
    """Insert the valid rows readable from ``source`` into ``fresh``, in rowid order; where a read
    fails, reading resumes further on (jumps of 2, 4, 8, ... rowids), so a bad page loses only its rows."""
    try:
        src = _connect(source, read_only=True)
    except sqlite3.Error:
        return
    query = f"{_SELECT.replace('SELECT ', 'SELECT rowid, created, ', 1)} WHERE rowid > ? ORDER BY rowid"
    last, failures = 0, 0
    try:
        while failures < 40:
            rows: list[tuple] = []
            done = False
            try:
                for row in src.execute(query, (last,)):
                    last = row[0]
                    if isinstance(row[2], str) and _real(row[1]) and result_from_row(row[3:]) is not None:
                        rows.append((*row[2:], row[1]))
                done = True
            except sqlite3.Error:
                failures += 1
                last += 2**failures
            with _transaction(fresh):
                fresh.executemany("INSERT OR IGNORE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            if done:
                break
    finally:
        src.close()


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (writers queue on the busy timeout)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class ResultStore:
    """Key -> ScoreResult, persisted in ``<folder>/results.sqlite``.

    ``notes``: what went wrong with the store and what was done about it (one line each, without
    absolute paths), for ``errors.csv``. ``read_only``: the store could not be written; results
    computed now go to the throw-away store ``scratch``.
    """

    def __init__(self, folder: Path, run_id: str) -> None:
        self.path = folder / "results.sqlite"
        self.run_id = run_id
        self.notes: list[str] = []
        self.read_only = False
        self.scratch: Path | None = None
        self._scratch_used = False
        self._base: sqlite3.Connection | None = None  # read-only store under a throw-away one
        db = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _folder_lock(folder):
                db = self._open_writable(self.path)
        except (OSError, sqlite3.OperationalError):
            db = None
        if db is None:
            db = self._open_scratch()
        self._db = db

    # ---------------------------------------------------------------- opening
    def _open_writable(self, path: Path) -> sqlite3.Connection | None:
        """A checked, writable connection (a damaged file replaced first); None when read-only."""
        if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
            return None
        try:
            db = _connect(path)
            problem = _problem(db) if self._needs_check(path) else None
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            db, problem = None, f"damaged ({exc})"
        if problem is not None:
            if db is not None:
                db.close()
            self._replace_damaged(path, problem)
            db = _connect(path)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(SCHEMA)
            with _transaction(db):  # a write lock: fails here, not mid-run, on a read-only file
                pass
        except sqlite3.OperationalError:
            db.close()
            return None
        _CHECKED.add(_identity(path))
        return db

    @staticmethod
    def _needs_check(path: Path) -> bool:
        try:
            return _identity(path) not in _CHECKED
        except OSError:
            return False  # a new file

    def _replace_damaged(self, path: Path, problem: str) -> None:
        """Salvage the valid readable rows into a fresh file, move the damaged one aside, swap in the fresh one."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        if aside.exists():
            aside = path.with_name(f"{aside.name}-{os.getpid()}")
        fresh_path = path.with_name(f"{path.name}.fresh-{os.getpid()}")
        fresh_path.unlink(missing_ok=True)
        fresh = _connect(fresh_path)
        fresh.executescript(SCHEMA)
        saved = _salvage(path, fresh)
        fresh.close()
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        os.replace(fresh_path, path)
        self._note(
            f"{path.name} {problem}: moved aside as {aside.name}; {saved} readable results kept in a fresh store",
            f"result store {path} {problem}: moved aside as {aside}; {saved} readable results kept in a fresh store",
        )

    def _open_scratch(self) -> sqlite3.Connection:
        """Serve the unwritable store read-only and write to a throw-away store of this run."""
        self.read_only = True
        self._base = self._open_read_only(self.path)
        self.scratch = Path(tempfile.gettempdir()) / f"miqa-store-{self.run_id}" / "results.sqlite"
        self.scratch.parent.mkdir(parents=True, exist_ok=True)
        with _folder_lock(self.scratch.parent):
            db = self._open_writable(self.scratch)
        if db is None:
            raise OSError(f"cannot write the throw-away result store {self.scratch}")
        if self._base is None and self.path.exists():
            self._note(f"{self.path.name} cannot be read nor written: not used",
                       f"result store {self.path} cannot be read nor written: not used")
        return db

    def _note_scratch_use(self) -> None:
        """Say once, at the first result computed, that it will not be kept."""
        if self.read_only and not self._scratch_used:
            self._scratch_used = True
            self._note(
                f"{self.path.name} cannot be written: results computed in this run are not kept (throw-away store)",
                f"result store {self.path} cannot be written: results computed in this run go to the "
                f"throw-away store {self.scratch} and are not kept",
            )

    def _open_read_only(self, path: Path) -> sqlite3.Connection | None:
        """A read-only connection to a sound store, None when there is none to read."""
        if not path.is_file():
            return None
        for immutable in (False, True):  # immutable: a WAL file in a folder we cannot write
            try:
                db = _connect(path, read_only=True, immutable=immutable)
                problem = _problem(db)
            except sqlite3.Error:
                continue
            if problem is None:
                return db
            db.close()
            self._note(f"{path.name} {problem} and cannot be moved aside: not used",
                       f"result store {path} {problem} and cannot be moved aside: not used")
            return None
        return None

    def _note(self, short: str, full: str) -> None:
        self.notes.append(short)
        warnings.warn(StoreWarning(full), stacklevel=3)

    def error_records(self) -> list[dict[str, str]]:
        """The notes as ``errors.csv`` rows (stage ``store``)."""
        return [{"model": "", "dataset": "", "file_or_image": self.path.name, "stage": "store", "reason": n} for n in self.notes]

    # ---------------------------------------------------------------- reading and writing
    def get_many(self, keys: Iterable[str], *, need_embedding: Mapping[str, bool] | None = None) -> dict[str, ScoreResult]:
        """Stored, valid, usable results among ``keys``.

        A failed result from another run is not usable (it is retried), except a condition that
        does not apply to the image (:func:`not_applicable`, which never has an embedding); nor is one without an
        embedding when ``need_embedding[key]`` is true; nor an invalid row (:func:`result_from_row`).
        """
        keys = list(keys)
        found = self._select(self._db, keys, need_embedding)
        if self._base is not None:
            found.update(self._select(self._base, [k for k in keys if k not in found], need_embedding))
        return found

    def _select(self, db: sqlite3.Connection, keys: list[str], need_embedding: Mapping[str, bool] | None) -> dict[str, ScoreResult]:
        found: dict[str, ScoreResult] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = [
                row for row in db.execute(f"{_SELECT} WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                if self._usable(row, need_embedding)
            ]
            for row, probs in zip(rows, _many_probs([r[4] for r in rows])):
                result = _result(row[1:], probs)
                if result is not None:
                    found[row[0]] = result
        return found

    def _usable(self, row: tuple, need_embedding: Mapping[str, bool] | None) -> bool:
        """Whether a stored row (``_SELECT`` order) may serve this run: not another run's failure
        (unless the condition does not apply), and with an embedding where one is needed."""
        key, run_id, error, embedding = row[0], row[1], row[7], row[8]
        if error is not None and run_id != self.run_id and not not_applicable(error):
            return False
        return not (need_embedding and need_embedding.get(key) and embedding is None and not not_applicable(error))

    def put_many(self, items: Iterable[tuple[str, ScoreResult]]) -> None:
        """Store one batch atomically (all or nothing)."""
        self._note_scratch_use()
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
        with _transaction(self._db):
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)

    def beat(self, worker: str, *, done: bool = False) -> None:
        """Record that ``worker`` of this run is alive (and whether its planned share is done)."""
        with _transaction(self._db):
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

    def close(self) -> None:
        self._db.close()
        if self._base is not None:
            self._base.close()


def default_worker_name() -> str:
    """``gw0``.. under pytest-xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
