"""Reports are written atomically: a process SIGKILLed while it rewrites scores.csv, junit.xml and
run.json over and over never leaves a half-written file under the final name; each file is one of
the complete versions. Also: CSV rows survive hostile cell text (CR, LF, NUL, formulas)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from miqa_checks.safe_io import write_csv

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from miqa_checks.junit import CaseRecord, write_junit
    from miqa_checks.report import write_reports

    out = Path(sys.argv[1])

    def version(k):
        scores = [dict(model="m", dataset="d", image_id=f"img{i}", condition="clean", prompt_id="base",
                       score=1 + (i * (k + 1)) % 4, parse_ok=True, raw_text="x" * 200) for i in range(4000)]
        cases = [CaseRecord(nodeid=f"t::c{i}[{k}]", outcome="passed", duration=0.0, properties=[("v", str(k))])
                 for i in range(2000)]
        return scores, cases

    versions = [version(0), version(1)]
    k = 0
    while True:
        scores, cases = versions[k % 2]
        write_reports(out, cells=[], scores=scores, displacements=[], errors=[], run_info={"version": k % 2})
        write_junit(out / "junit.xml", cases)
        print(k, flush=True)
        k += 1
    """
)


@pytest.fixture(scope="module")
def complete_versions(tmp_path_factory):
    """The two complete versions of each file, written by one uninterrupted pass."""
    base = tmp_path_factory.mktemp("atomic-ref")
    script = base / "writer.py"
    script.write_text(WRITER.replace("while True:", "for _ in range(2):"))
    subprocess.run([sys.executable, str(script), str(base / "out")], check=True, capture_output=True, timeout=120)
    # after two passes the folder holds version 1; rerun one pass for version 0
    one = base / "one.py"
    one.write_text(WRITER.replace("while True:", "for _ in range(1):"))
    subprocess.run([sys.executable, str(one), str(base / "out0")], check=True, capture_output=True, timeout=120)
    names = ("scores.csv", "junit.xml", "run.json", "matrix.csv", "errors.csv")
    return {n: {(base / "out0" / n).read_bytes(), (base / "out" / n).read_bytes()} for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_mid_write_leaves_only_complete_files(tmp_path, complete_versions, seed):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout.readline()  # one full pass done: every file exists
    time.sleep(random.Random(seed).uniform(0.0, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for name, versions in complete_versions.items():
        assert (out / name).read_bytes() in versions, f"{name} is not one of the complete versions"
    assert json.loads((out / "run.json").read_text())["version"] in (0, 1)


def test_hostile_cell_text_keeps_rows_intact(tmp_path):
    hostile = ["a\rb", "line1\r\nline2", "\r=1+1", "\n@SUM(A1)", "nul\x00byte", '"quoted", comma', "=cmd|' /C calc'!A0",
               "-2+3", "+x", "\tTAB", "ok"]
    rows = [{"raw_text": t, "n": i} for i, t in enumerate(hostile)]
    write_csv(tmp_path / "x.csv", ["raw_text", "n"], rows)
    with open(tmp_path / "x.csv", newline="", encoding="utf-8") as fh:
        back = list(csv.DictReader(fh))
    assert [r["n"] for r in back] == [str(i) for i in range(len(hostile))]
    for r in back:
        assert r["raw_text"][:1] not in ("=", "+", "-", "@", "\t", "\r", "\n"), r
