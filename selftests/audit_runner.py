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


def run_audit(tmp: Path, *args: str, report: str = "reports", cache: str = "cache", timeout: float = 600) -> AuditRun:
    """``pytest tests <args>`` from the repo root with reports and cache under ``tmp``."""
    report_dir = tmp / report
    cmd = [
        sys.executable, "-m", "pytest", str(REPO / "tests"), "-p", "no:cacheprovider", "-q", "--no-header",
        "--rootdir", str(REPO), "--miqa-report-dir", str(report_dir), "--miqa-cache", str(tmp / cache), *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return AuditRun(done.returncode, done.stdout + done.stderr, report_dir)
