"""Settings inputs that are not what they claim: a device or FIFO as the config file, a huge or
deeply nested TOML, report/cache folders that are files or cannot be written, and a baseline with
scores off the 1..5 scale. Each is a usage error (exit 4) naming the input, before any work: never
a MemoryError, a hang or an INTERNALERROR.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
from pathlib import Path

import pytest

from audit_runner import REPO, audit_command, audit_env
from miqa_checks.config import MAX_SETTINGS_BYTES, resolve_settings
from miqa_checks.errors import MiqaUsageError
from miqa_checks.report import SCORES_COLUMNS, read_baseline_scores

NESTED = "a = " + "[" * 100_000 + "]" * 100_000 + "\n"


def _limited() -> None:
    """A child capped at 2 GiB of address space: reading /dev/zero whole ends in MemoryError, not swap."""
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


def _usage_run(tmp: Path, *args: str, report: str = "reports", cache: str = "cache") -> str:
    """Run the audit suite; assert it stops with a usage error (exit 4) before any work; its output."""
    done = subprocess.run(
        audit_command(tmp, "--miqa-model", "sim-robust", "--miqa-max-images", "5", *args, report=report, cache=cache),
        cwd=REPO, capture_output=True, text=True, timeout=120, env=audit_env(), preexec_fn=_limited,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 4, output[-3000:]
    assert "INTERNALERROR" not in output and "Traceback" not in output and "MemoryError" not in output
    assert not (tmp / "cache").exists()  # nothing loaded, nothing stored
    return output


def test_dev_zero_as_config(tmp_path):
    assert "not a regular file" in _usage_run(tmp_path, "--miqa-config", "/dev/zero")


def test_fifo_as_config(tmp_path):
    fifo = tmp_path / "settings.toml"
    os.mkfifo(fifo)
    assert "not a regular file" in _usage_run(tmp_path, "--miqa-config", str(fifo))  # no writer: would block forever


def test_deeply_nested_config(tmp_path):
    config = tmp_path / "deep.toml"
    config.write_text(NESTED)
    assert "nested too deep" in _usage_run(tmp_path, f"--miqa-config={config}")


def test_deeply_nested_pyproject_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.miqa]\n" + NESTED)
    with pytest.raises(MiqaUsageError, match="pyproject.toml: .*nested too deep"):
        resolve_settings({}, pyproject=tmp_path / "pyproject.toml")


def test_oversized_config(tmp_path):
    config = tmp_path / "big.toml"
    config.write_text("# padding\n" * (MAX_SETTINGS_BYTES // 10 + 1) + 'profile = "default"\n')
    with pytest.raises(MiqaUsageError, match="larger than"):
        resolve_settings({}, config_file=config)


@pytest.mark.parametrize("option", ["--miqa-report-dir", "--miqa-cache"])
@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_folder_option_naming_a_file(tmp_path, option, where):
    (tmp_path / "taken").write_text("a file\n")
    name = "taken" if where == "file" else "taken/sub"
    kind = dict(report=name) if option == "--miqa-report-dir" else dict(cache=name)
    output = _usage_run(tmp_path, **kind)
    assert option in output and "is a file" in output
    with pytest.raises(MiqaUsageError, match="is a file"):
        resolve_settings({option.removeprefix("--miqa-").replace("-", "_"): str(tmp_path / name)})


def test_unwritable_report_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i refused)")
    if not root:
        locked.chmod(0o555)
    try:
        output = _usage_run(tmp_path, report="locked/reports")
        assert "--miqa-report-dir" in output and "cannot be written" in output
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        else:
            locked.chmod(0o755)


def _baseline(path: Path, scores: list[str], raw: str = "") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SCORES_COLUMNS)
        for i, s in enumerate(scores):
            w.writerow({"model": "m", "dataset": "d", "image_id": f"img{i}", "condition": "clean", "prompt_id": "base",
                        "score": s, "parse_ok": "True", "raw_text": raw}.get(c, "") for c in SCORES_COLUMNS)
    return path


@pytest.mark.parametrize("bad", ["7", "0", "-1", "inf", "-inf", "1e999"])
def test_baseline_score_off_the_scale(tmp_path, bad):
    path = _baseline(tmp_path / "scores.csv", ["3", "", "4.5", bad])
    with pytest.raises(MiqaUsageError, match=r"scores\.csv: data row 4 \(d, img3, clean, base\)"):
        read_baseline_scores(path)


def test_baseline_on_the_scale_or_empty_or_a_parsed_answer(tmp_path):
    ok = read_baseline_scores(_baseline(tmp_path / "scores.csv", ["1", "5", "", "2.5"]))
    assert [v if v == v else None for v in ok.values()] == [1.0, 5.0, None, 2.5]
    parsed = read_baseline_scores(_baseline(tmp_path / "gen.csv", ["7"], raw="Quality: 7/10"))  # a real answer
    assert list(parsed.values()) == [7.0]


def test_baseline_off_the_scale_through_the_audit(tmp_path):
    path = _baseline(tmp_path / "old_scores.csv", ["3", "9"])
    output = _usage_run(tmp_path, "--miqa-baseline", str(path))
    assert "old_scores.csv: data row 2" in output
