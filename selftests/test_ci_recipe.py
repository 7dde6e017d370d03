"""docs/CI.md: the GitHub Actions and GitLab CI recipes' audit commands, run verbatim."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audit_runner import REPO, audit_env

DOC = REPO / "docs" / "CI.md"
#: Small enough for a self-test; a user's project sets its own (or none: the profile's 64). The
#: embedded samples come from few source files: every image a unit, so the gate can decide.
PROJECT_MIQA_TABLE = '\n[tool.miqa]\nmax_images = 8\ndata = ["samples"]\nunit = "image"\n'


def _workflows() -> tuple[dict, dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2, "docs/CI.md holds one GitHub and one GitLab workflow"
    return yaml.safe_load(blocks[0]), yaml.safe_load(blocks[1])


def _github_run(job: dict, name: str) -> str:
    (step,) = [s for s in job["steps"] if s.get("name") == name]
    return step["run"]


def _commands() -> dict[str, str]:
    github, _ = _workflows()
    return {
        "baseline": _github_run(github["jobs"]["baseline"], "audit the baseline"),
        "gate": _github_run(github["jobs"]["gate"], "audit the candidate against the baseline"),
        "summary": _github_run(github["jobs"]["gate"], "summary"),
    }


def test_gitlab_runs_the_same_audit_commands():
    github, gitlab = _workflows()
    commands = _commands()
    assert gitlab["miqa-baseline"]["script"] == commands["baseline"].strip().splitlines()
    pytest_lines = [line for line in gitlab["miqa-gate"]["script"] if line.startswith("pytest")]
    assert pytest_lines == commands["gate"].strip().splitlines()
    assert gitlab["miqa-gate"]["artifacts"]["reports"]["junit"] == "reports/junit.xml"
    assert gitlab["miqa-gate"]["artifacts"]["when"] == "always"
    assert ".miqa_cache/" in gitlab["default"]["cache"]["paths"]
    steps = github["jobs"]["gate"]["steps"]
    assert any(s.get("uses", "").startswith("actions/cache") and s["with"]["path"] == ".miqa_cache" for s in steps)
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["if"] == "always()" and upload[0]["with"]["path"] == "reports/"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the audit suite, as a user's repository holds it."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "tests", root / "tests")
    shutil.copy(REPO / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + PROJECT_MIQA_TABLE)
    return root


def _run(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=900,
        env=audit_env(PATH=path, **env),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "candidate, gate_exit", [("sim-robust", 0), ("sim:pixelation=-45", 1)], ids=["robust", "pixelation-defect"]
)
def test_the_recipe_gates_an_upgrade(project, candidate, gate_exit):
    commands = _commands()
    step_summary = project / "step_summary.md"
    baseline = _run(commands["baseline"], project, BASELINE_MODEL="sim-robust")
    assert baseline.returncode == 0, baseline.stdout[-3000:] + baseline.stderr[-2000:]
    assert (project / "baseline_scores.csv").is_file()

    gate = _run(commands["gate"], project, CANDIDATE_MODEL=candidate)
    assert gate.returncode == gate_exit, gate.stdout[-3000:] + gate.stderr[-2000:]
    assert "test_baseline_agreement[candidate-" in (project / "reports" / "junit.xml").read_text()

    summary = _run(commands["summary"], project, GITHUB_STEP_SUMMARY=str(step_summary))
    assert summary.returncode == 0
    text = step_summary.read_text()
    assert text.startswith("## miqa-checks summary")
    assert ("**FAILED**" in text) == bool(gate_exit)
    if gate_exit:
        assert "pixelation" in text
