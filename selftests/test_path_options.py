"""Every path-valued miqa option works written ``--opt PATH`` as well as ``--opt=PATH``.

pytest picks its rootdir and config file before it loads the plugin, so with a space the path
used to be taken for a test path: the project's ``[tool.pytest.ini_options]`` was not read and
everything under the invocation folder was collected (see ``miqa_checks/cli_paths.py``). Each
run here is a real ``pytest`` subprocess in a small project whose ``testpaths`` leaves out one
test file; the option's value lies outside the project.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from audit_runner import audit_env

PYPROJECT = """
[tool.pytest.ini_options]
testpaths = ["tests"]
junit_family = "xunit1"
pythonpath = ["src"]
addopts = "--maxfail=7"
markers = ["probe: declared only in this pyproject"]

[tool.miqa]
profile = "strict"
"""

#: Passes only when pytest read the project's pyproject (rootdir, ini values, addopts,
#: pythonpath, markers) and the plugin read its [tool.miqa]; prints what the plugin received.
TEST_IN = """
import json
from pathlib import Path

import pytest

import from_src


@pytest.mark.probe
def test_setup(pytestconfig, miqa_settings):
    assert pytestconfig.rootpath == Path(__file__).resolve().parents[1]
    assert pytestconfig.getini("junit_family") == "xunit1"
    assert pytestconfig.getoption("maxfail") == 7
    assert miqa_settings.profile == "strict"
    s = miqa_settings
    print("OBSERVED", json.dumps({
        "--miqa-data": list(s.data), "--miqa-model": list(s.models), "--miqa-report-dir": str(s.report_dir),
        "--miqa-cache": str(s.cache_dir), "--miqa-baseline": str(s.baseline), "--miqa-config": s.seed,
    }))
"""

SCORES_CSV = "model,dataset,image_id,condition,prompt_id,score,parse_ok,raw_text\nold,samples_ct,a,clean,p0,3.0,1,3\n"


def _images(folder: Path) -> Path:
    folder.mkdir()
    for i in range(2):
        Image.new("L", (16, 16), color=40 * i).save(folder / f"im{i}.png")
    return folder


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir()
    path.write_text(text)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


#: option -> (make its value under the outside folder, what the plugin must receive from it).
OPTIONS = {
    "--miqa-data": (lambda d: _images(d / "imgs"), lambda v: [str(v)]),
    "--miqa-report-dir": (lambda d: _folder(d / "reports"), str),
    "--miqa-cache": (lambda d: _folder(d / "cache"), str),
    "--miqa-baseline": (lambda d: _file(d / "base" / "scores.csv", SCORES_CSV), str),
    "--miqa-config": (lambda d: _file(d / "cfg" / "miqa.toml", "seed = 7\n"), lambda v: 7),
    "--miqa-model": (lambda d: _folder(d / "checkpoint"), lambda v: [str(v)]),  # a local checkpoint folder
}


@dataclass
class Run:
    ret: int
    output: str


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with testpaths=["tests"] and one test outside them."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "src" / "from_src.py").write_text("")
    (root / "tests" / "test_in.py").write_text(TEST_IN)
    (root / "test_outside.py").write_text("def test_outside():\n    pass\n")
    return root


def _run(project: Path, *args: str) -> Run:
    """``pytest <args>`` run by a user in the project folder."""
    model = () if any(a.startswith("--miqa-model") for a in args) else ("--miqa-model=sim-robust",)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rA", "--strict-markers", *model, *args]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300, env=audit_env())
    return Run(done.returncode, done.stdout + done.stderr)


@pytest.mark.parametrize("spelling", ["space", "equals"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_path_option_keeps_the_project_configuration(project, tmp_path_factory, option, spelling):
    make, expected = OPTIONS[option]
    value = make(tmp_path_factory.mktemp("outside"))
    args = (option, str(value)) if spelling == "space" else (f"{option}={value}",)
    result = _run(project, *args)
    output = result.output
    assert result.ret == 0, output
    assert "1 passed" in output
    assert "tests/test_in.py::test_setup PASSED" in output
    assert "test_outside" not in output
    observed = json.loads(output.split("OBSERVED ", 1)[1].splitlines()[0])
    assert observed[option] == expected(value)


def test_space_spelling_refused_when_pytest_already_used_another_configuration(project, tmp_path_factory):
    """The value lies in a folder with its own pytest configuration, whose addopts pytest has
    already applied: no silent half-correction, a usage error that shows the '=' spelling."""
    outside = tmp_path_factory.mktemp("otherproject")
    (outside / "pytest.ini").write_text("[pytest]\naddopts = -ra\n")
    images = _images(outside / "imgs")
    result = _run(project, "--miqa-data", str(images))
    output = result.output
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert f"--miqa-data={images}" in output
    assert "test_outside" not in output and "test_setup" not in output
    assert _run(project, f"--miqa-data={images}").ret == 0


def test_values_that_cannot_be_paths_are_no_paths(tmp_path):
    """A 5000-character sim spec or a NUL byte makes ``Path.exists`` raise: not a path, no crash."""
    from miqa_checks.cli_paths import spaced_values

    args = ["--miqa-model", "sim:" + "x" * 5000, "--miqa-data", "a\0b", "--miqa-cache", str(tmp_path)]
    flags = {"--miqa-model", "--miqa-data", "--miqa-cache"}
    assert spaced_values(args, flags, tmp_path) == [("--miqa-cache", str(tmp_path))]
