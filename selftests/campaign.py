"""Helpers of the reliability campaign (``selftests/test_reliability_*.py``).

- :func:`audit_command` / :func:`start_audit`: the audit suite (``pytest tests ...``) as a user runs
  it, started in its own process group so that a test can SIGKILL or SIGINT the whole run
  (controller and xdist workers).
- :func:`store_state`: what ``<cache>/results.sqlite`` holds (integrity check, rows, distinct keys),
  read on a fresh connection.
- :func:`kill_trial`: start a run, wait until its first batch is stored, kill it at a delay drawn
  from a seeded RNG, count what survived, rerun to the end; returns the figures to check.
- :func:`scan_for`: every file under a folder (reports, logs, the SQLite store and its WAL) searched
  byte-wise for marker strings.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from audit_runner import REPO, AuditRun, audit_command, audit_env


@dataclass
class Running:
    """An audit run in flight (own process group); its output goes to ``log``."""

    proc: subprocess.Popen
    log: Path
    report_dir: Path

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 300) -> AuditRun:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise
        return AuditRun(self.proc.returncode, self.log.read_text(errors="replace"), self.report_dir)


def _default_sigint() -> None:
    """In the audit's process: Ctrl-C as a terminal delivers it, even where this test runs with
    SIGINT ignored (a shell's background job inherits SIG_IGN, and so would the audit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_audit(tmp: Path, *args: str, report: str = "reports", cache: str = "cache", env: dict | None = None) -> Running:
    log = tmp / f"{report}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(
        audit_command(tmp, *args, report=report, cache=cache), cwd=REPO, env=env or audit_env(),
        stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_default_sigint,
    )
    fh.close()
    return Running(proc, log, tmp / report)


def run_audit_env(tmp: Path, *args: str, report: str = "reports", cache: str = "cache", env: dict | None = None,
                  timeout: float = 300) -> AuditRun:
    return start_audit(tmp, *args, report=report, cache=cache, env=env).wait(timeout)


@dataclass(frozen=True)
class StoreState:
    integrity_ok: bool
    rows: int
    distinct_keys: int
    failed_rows: int


def store_state(cache: Path) -> StoreState:
    """Integrity and counts of ``cache/results.sqlite`` (a missing store counts as empty)."""
    path = Path(cache) / "results.sqlite"
    if not path.exists():
        return StoreState(True, 0, 0, 0)
    db = sqlite3.connect(path, timeout=60)
    try:
        db.execute("PRAGMA busy_timeout = 60000")
        ok = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        try:
            rows, distinct, failed = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT key), COALESCE(SUM(error IS NOT NULL), 0) FROM results"
            ).fetchone()
        except sqlite3.OperationalError:  # killed before the schema was created
            rows = distinct = failed = 0
        return StoreState(ok, rows, distinct, failed)
    finally:
        db.close()


def stored_rows(cache: Path) -> int:
    """Rows stored so far (0 while the store or its table does not exist yet)."""
    path = Path(cache) / "results.sqlite"
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@dataclass
class KillTrial:
    seed: int
    delay_s: float
    stored_at_kill: StoreState
    rerun: AuditRun
    after: StoreState
    killed_exit: int | None


def kill_trial(tmp: Path, args: tuple[str, ...], *, seed: int, max_delay_s: float, sig: int = signal.SIGKILL,
               name: str = "trial") -> KillTrial:
    """Start the audit, wait for its first stored batch, signal the process group after a seeded
    random delay in [0, max_delay_s), then rerun on the same cache to the end."""
    delay = random.Random(seed).uniform(0.0, max_delay_s)
    running = start_audit(tmp, *args, report=f"{name}-killed", cache=f"{name}-cache")
    cache = tmp / f"{name}-cache"
    deadline = time.monotonic() + 120
    while stored_rows(cache) == 0 and running.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    running.signal_group(sig)
    try:
        running.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        running.signal_group(signal.SIGKILL)
        running.proc.wait(timeout=30)
    time.sleep(0.2)  # xdist workers of a SIGINTed run finish their own teardown
    if sig == signal.SIGKILL:
        running.signal_group(signal.SIGKILL)  # nothing of the group may survive
    at_kill = store_state(cache)
    rerun = run_audit_env(tmp, *args, report=f"{name}-rerun", cache=f"{name}-cache")
    return KillTrial(seed, delay, at_kill, rerun, store_state(cache), running.proc.returncode)


def scan_for(folder: Path, markers: list[str]) -> list[tuple[str, str]]:
    """(file relative to ``folder``, marker) for every marker found in any file (byte-wise, also
    UTF-16 for SQLite text stored that way)."""
    hits = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        for marker in markers:
            if marker.encode() in data or marker.encode("utf-16-le") in data:
                hits.append((str(path.relative_to(folder)), marker))
    return hits


def files_scanned(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
