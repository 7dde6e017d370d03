"""docs/EXTENDING.md, run the way a user would: a fresh project folder with the installed plugin.

The two worked examples (a new property in one file, a new corruption from conftest.py) are taken
from the code blocks of the page, so the page cannot drift from what works. Each project runs in
a subprocess (``pytester.runpytest_subprocess``): the audit imports numpy and scipy, which cannot
be imported twice in one process.
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "EXTENDING.md"
SUITE_FILE = REPO / "tests" / "test_audit_corruption.py"
IMAGES = "8"


def doc_files() -> dict[str, str]:
    """The page's code blocks that start with ``# file: <path>``: path -> text."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    out = {}
    for block in blocks:
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            out[first.removeprefix("# file: ").strip()] = rest
    return out


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``pytest`` in the project: its tests/, the embedded samples judged per image (they are crops
    of 14 files: grouped by source they cannot decide; docs/examples/per-image.toml)."""
    pytester.makefile(".ini", pytest="[pytest]\ntestpaths = tests\n")
    pytester.makefile(".toml", pyproject='[tool.miqa]\nunit = "image"\n')
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--miqa-report-dir={pytester.path / 'reports'}",
        f"--miqa-cache={pytester.path / 'cache'}", f"--miqa-max-images={IMAGES}", *args, timeout=600)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_page_has_both_examples() -> None:
    assert set(doc_files()) == {"tests/test_flip.py", "conftest.py"}


def test_example_1_a_new_property_in_one_file(pytester: pytest.Pytester) -> None:
    write(pytester, {"tests/test_flip.py": doc_files()["tests/test_flip.py"]})
    result = run(pytester, "--miqa-model=sim-robust")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out[-3000:]
    rows = read_csv(pytester.path / "reports" / "matrix.csv")
    scores = read_csv(pytester.path / "reports" / "scores.csv")
    assert {s["condition"] for s in scores} == {"clean", "hflip-1"}
    datasets = {r["dataset"] for r in rows}
    assert len(rows) == len(datasets) >= 2  # one cell per dataset
    for r in rows:
        images = {s["image_id"] for s in scores if s["dataset"] == r["dataset"]}
        assert r["property"] == "flip_invariance" and r["condition"] == "hflip-1" and r["corruption"] == "hflip"
        assert r["test_id"] == f"test_flip_invariance[sim-robust-{r['dataset']}-hflip-1]"
        assert r["threshold"] == "|delta| <= 5%" and r["verdict"] == "pass" and r["n"] == str(len(images))
    cases = ET.parse(pytester.path / "reports" / "junit.xml").getroot().iter("testcase")
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert {name for name in props} == {r["test_id"] for r in rows}
    assert all(p["verdict"] == "pass" and p["threshold"] == "|delta| <= 5%" for p in props.values())
    summary = (pytester.path / "reports" / "summary.md").read_text()
    assert f"{len(rows)} property cells" in summary


def test_example_2_a_corruption_from_conftest(pytester: pytest.Pytester) -> None:
    write(pytester, {"conftest.py": doc_files()["conftest.py"], "tests/test_audit_corruption.py": SUITE_FILE.read_text()})
    result = run(pytester, "--miqa-model=sim-robust", "-k", "jpeg_q")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out[-3000:]
    rows = read_csv(pytester.path / "reports" / "matrix.csv")
    datasets = {r["dataset"] for r in rows}
    assert rows and all(r["corruption"] == "jpeg_q" for r in rows)
    per_property = {p: sum(r["property"] == p for r in rows) / len(datasets)
                    for p in ("corruption_stability", "severity_response", "no_inflation")}
    assert per_property == {"corruption_stability": 5, "severity_response": 1, "no_inflation": 5}
    assert any(r["test_id"] == f"test_corruption_stability[sim-robust-{r['dataset']}-jpeg_q-3]" for r in rows)
    # -k computed only what it selected: the clean images and the five JPEG qualities
    scores = read_csv(pytester.path / "reports" / "scores.csv")
    assert {s["condition"] for s in scores} == {"clean", *(f"jpeg_q-{s}" for s in range(1, 6))}
    assert "jpeg_q" in (pytester.path / "reports" / "summary.html").read_text()


def _copy_with_one_line_changed(old: str, new: str) -> str:
    text = SUITE_FILE.read_text()
    assert text.count(old) == 1
    return text.replace(old, new)


def test_a_copied_test_with_a_new_name_is_a_new_property_in_the_family(pytester: pytest.Pytester) -> None:
    """Copy tests/test_audit_corruption.py, rename one test: a new property, planned, reported and
    counted in the model's alpha family (the built-in cell's adjusted p-value grows; the new
    property's cells get the default share)."""
    write(pytester, {"tests/test_audit_corruption.py": SUITE_FILE.read_text()})
    select = ("--miqa-model=sim-paper", "-k", "samples_ct and pixelation and stability")
    alone = run(pytester, *select)
    assert alone.ret == 1, alone.stdout.str()[-3000:]  # sim-paper's planted pixelation defect
    before = {r["test_id"]: r for r in read_csv(pytester.path / "reports" / "matrix.csv")}

    write(pytester, {"tests/test_copy.py": _copy_with_one_line_changed(
        "def test_corruption_stability(miqa):", "def test_my_stability(miqa):")})
    both = run(pytester, *select)
    rows = {r["test_id"]: r for r in read_csv(pytester.path / "reports" / "matrix.csv")}
    mine = {k: r for k, r in rows.items() if r["property"] == "my_stability"}
    assert len(mine) == 5, both.stdout.str()[-3000:]  # pixelation x 5 severities on samples_ct
    grown = 0
    for test_id, row in mine.items():
        builtin = rows[test_id.replace("test_my_stability", "test_corruption_stability")]
        same = ("delta_pct", "ci_low", "ci_high", "threshold", "n")
        assert {k: row[k] for k in same} == {k: builtin[k] for k in same}
        # its alpha: the default share 0.05 against corruption_stability's 0.25, over as many cells
        p_mine, p_builtin = float(row["p_value"]), float(builtin["p_value"])
        assert p_mine == pytest.approx(min(1.0, 5 * p_builtin), rel=1e-6)
        p_before = float(before[builtin["test_id"]]["p_value"])
        assert p_builtin >= p_before
        grown += p_before < p_builtin  # an adjusted p-value below 1 grows with the family
    assert grown >= 1 and any(r["verdict"] == "fail" for r in mine.values())


def test_tolerance_in_the_test_overrides_the_profile(pytester: pytest.Pytester) -> None:
    write(pytester, {"tests/test_audit_corruption.py": _copy_with_one_line_changed(
        'requests=[CLEAN, CONDITION], tolerance="stability_tolerance_pct")',
        'requests=[CLEAN, CONDITION], tolerance=30)')})
    run(pytester, "--miqa-model=sim-paper", "-k", "samples_ct and pixelation and stability")
    rows = read_csv(pytester.path / "reports" / "matrix.csv")
    assert len(rows) == 5 and {r["property"] for r in rows} == {"corruption_stability"}
    assert {r["threshold"] for r in rows} == {"|delta| <= 30%"}


MISUSE = '''
from miqa_checks import CLEAN, CONDITION, audit, each_corruption

cells = each_corruption(only=["pixelation"], severity=False)


@audit(cells=cells, requests=[CLEAN], tolerance=5.0)
def test_asserts_nothing(miqa):
    miqa.scores(miqa.clean)


@audit(cells=cells, requests=[CLEAN], tolerance=5.0)
def test_reads_an_undeclared_request(miqa):
    miqa.assert_change_within("pixelation-5", miqa.clean, pct=miqa.tolerance)


@audit(cells=cells, requests=[CLEAN, "pixelation-5"], tolerance=5.0)
def test_decides_twice(miqa):
    miqa.assert_change_within("pixelation-5", miqa.clean, pct=50)
    miqa.assert_change_within("pixelation-5", miqa.clean, pct=1)
'''


def test_a_test_must_decide_its_cell_once_from_declared_requests(pytester: pytest.Pytester) -> None:
    write(pytester, {"tests/test_misuse.py": MISUSE})
    result = run(pytester, "--miqa-model=sim-robust", "-k", "samples_ct")
    out = result.stdout.str()
    assert result.ret == 1, out[-3000:]
    rows = {r["property"]: r for r in read_csv(pytester.path / "reports" / "matrix.csv")}
    assert rows["asserts_nothing"]["verdict"] == "error"
    assert "made no decision" in rows["asserts_nothing"]["reason"]
    assert "reads_an_undeclared_request" not in rows  # failed before deciding
    assert "is not among the requests" in out and "declare it" in out
    assert rows["decides_twice"]["verdict"] == "error" and "already decided" in rows["decides_twice"]["reason"]
