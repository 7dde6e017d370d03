"""Run the audit suite (``tests/``) in a subprocess, as a user would, and read its reports."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Every image a unit (docs/examples/per-image.toml): the embedded samples grouped by source
#: file cannot decide anything, so the self-tests that need decisions on them use this.
PER_IMAGE = f"--miqa-config={REPO / 'docs' / 'examples' / 'per-image.toml'}"


@dataclass
class AuditRun:
    returncode: int
    output: str
    report_dir: Path

    def csv(self, name: str) -> list[dict[str, str]]:
        with open(self.report_dir / name, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    @property
    def matrix(self) -> list[dict[str, str]]:
        return self.csv("matrix.csv")

    @property
    def scores(self) -> list[dict[str, str]]:
        return self.csv("scores.csv")

    @property
    def run_info(self) -> dict:
        return json.loads((self.report_dir / "run.json").read_text())

    def verdicts(self, model: str) -> dict[str, str]:
        """test id -> verdict for one model label."""
        return {r["test_id"]: r["verdict"] for r in self.matrix if r["model"] == model}


def audit_command(tmp: Path, *args: str, report: str, cache: str) -> list[str]:
    """``pytest tests <args>`` from the repo root with reports and cache under ``tmp``."""
    return [
        sys.executable, "-m", "pytest", str(REPO / "tests"), "-p", "no:cacheprovider", "-q", "--no-header",
        "--rootdir", str(REPO), "--miqa-report-dir", str(tmp / report), "--miqa-cache", str(tmp / cache), *args,
    ]


def audit_env(**extra: str) -> dict[str, str]:
    """This environment, offline, without the xdist variables of a self-test worker."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    return env


def run_audit(tmp: Path, *args: str, report: str = "reports", cache: str = "cache", timeout: float = 600) -> AuditRun:
    """Run the audit suite to completion and read its reports."""
    done = subprocess.run(
        audit_command(tmp, *args, report=report, cache=cache), cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env=audit_env(),
    )
    return AuditRun(done.returncode, done.stdout + done.stderr, tmp / report)


def run_with_probe(tmp: Path, probe_source: str, selection: str, after: str) -> tuple[list[str], str]:
    """Run the audit in-process (``pytest.main`` in a fresh interpreter) with ``probe_source``
    loaded as plugin ``probe``, on ``sim-robust`` and the ``-k`` ``selection``; then print
    ``after`` (a Python expression over ``probe``, ``gc`` and ``rc``, pytest's exit code).
    Returns the printed words and the process output (for assertion messages)."""
    (tmp / "probe.py").write_text(probe_source)
    code = (
        "import gc, sys, pytest; sys.path.insert(0, sys.argv[1]); import probe; "
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'probe', 'tests', '--miqa-model=sim-robust', "
        f"'-k', {selection!r}, '--miqa-cache', sys.argv[1] + '/cache', '--miqa-report-dir', sys.argv[1] + '/reports']); "
        f"print({after})"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp)], cwd=REPO, capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    return (lines[-1].split() if lines else []), done.stdout[-2000:] + done.stderr[-2000:]
