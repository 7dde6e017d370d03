"""Self-tests of miqa_checks.report / safe_io: contract columns, CSV-injection escaping and its
reversal, scrubbing of paths / keys / patient fields, atomic writes, HTML and terminal summary."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from miqa_checks import report, safe_io
from miqa_checks.errors import MiqaUsageError
from miqa_checks.report import (
    ERRORS_COLUMNS,
    MATRIX_COLUMNS,
    MATRIX_EXTRA_COLUMNS,
    SCORES_COLUMNS,
    SCORES_EXTRA_COLUMNS,
    format_terminal_summary,
    read_scores_csv,
    write_reports,
)
from miqa_checks.safe_io import escape_cell, sanitize_filename, scrub, unescape_cell

FAKE_KEY = "sk-TESTfakeKEY1234567890abcdef"
ENV_KEY = "envsecretvalue-0123456789"
HOME_PATH = "/home/alice/secret_study/patient_dir/img_001.dcm"
TMP_PATH = "/tmp/pytest-of-alice/run7/scan.nii.gz"

CONTRACT_MATRIX = ["test_id", "property", "model", "dataset", "modality", "condition",
                   "corruption", "severity", "attribute", "n", "clean_mean", "cond_mean",
                   "delta_pct", "ci_low", "ci_high", "p_value", "threshold", "verdict"]
CONTRACT_SCORES = ["model", "dataset", "image_id", "condition", "prompt_id", "score",
                   "parse_ok", "raw_text"]

FORMULA_TEXTS = ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1)", "\tTAB", "'=already quoted",
                 "plain text", "", "line1\nline2, with comma \"quoted\""]


def _cell(model, ds, cor, sev, delta, verdict, prop="corruption_stability", attribute="",
          reason=""):
    cond = f"{cor}-{sev}" if cor else "clean"
    tid = f"test_{prop}[{model}-{ds}-{cor or attribute}{'-' + str(sev) if sev else ''}]"
    return dict(test_id=tid, property=prop, model=model, dataset=ds, modality="CT",
                condition=cond, corruption=cor, severity=sev, attribute=attribute, n=24,
                clean_mean=3.2, cond_mean=3.2 * (1 + delta / 100) if delta == delta else None,
                delta_pct=delta, ci_low=delta - 3 if delta == delta else math.nan,
                ci_high=delta + 3 if delta == delta else math.nan, p_value=0.01, threshold=10.0,
                verdict=verdict, reason=reason, n_needed=None, n_dropped=0)


def synthetic():
    cells = []
    for model in ("tiny-llava", "org/other model"):
        for ds in ("samples_ct", "oct"):
            for cor in ("pixelation", "gaussian_noise"):
                for sev in (1, 3, 5):
                    d = -4.0 * sev if cor == "pixelation" else 1.5 * sev
                    cells.append(_cell(model, ds, cor, sev, d, "fail" if abs(d) > 10 else "pass"))
            cells.append(_cell(model, ds, "", "", 7.5, "inconclusive",
                               prop="metadata_invariance", attribute="institution-world_class",
                               reason=f"too few images under {HOME_PATH}; key {FAKE_KEY}"))
            cells.append(_cell(model, ds, "", "", math.nan, "error",
                               prop="output_validity", reason=f"judge crashed at {TMP_PATH}"))
    # special: a -12.5 delta must stay a number; NaN/None written empty
    cells.append(_cell("tiny-llava", "oct", "contrast", 2, -12.5, "fail"))
    cells.append(_cell("tiny-llava", "oct", "contrast", 4, math.nan, "inconclusive",
                       reason=f"Authorization: Bearer abc.def.ghi {ENV_KEY}"))
    cells[-1]["ci_low"] = None

    scores = []
    for model in ("tiny-llava", "org/other model"):
        for i, txt in enumerate(FORMULA_TEXTS * 2):
            scores.append(dict(
                model=model, dataset="oct",
                image_id=["-2", "+1", "@SUM(1)", "=HYPERLINK(\"x\")"][i % 4] + f"_{i}" if i % 3
                else f"img_{i:03d}",
                condition="clean" if i < len(FORMULA_TEXTS) else "pixelation-3",
                prompt_id="base", score=(1 + (i * 7) % 5) + (0.25 if model != "tiny-llava" else 0),
                parse_ok=i % 5 != 0, raw_text=txt, method="generate",
                error=f"timeout talking to {FAKE_KEY}" if i == 3 else None,
                p1=None, p2=math.nan, p3=None, p4=None, p5=None))
    scores[0]["score"] = math.nan
    scores[1]["raw_text"] = f"model saw {HOME_PATH} and PatientName=DOE^JOHN"
    scores.append(dict(model="tiny-llava", dataset="oct", image_id="exp_0", condition="clean",
                       prompt_id="base", score=-12.5, parse_ok=True, raw_text="",
                       method="expected", error=None, probs=(0.1, 0.2, 0.3, 0.25, 0.15)))

    displacements = [dict(model=m, dataset="oct", corruption="pixelation", severity=s,
                          displacement=0.05 * s + (0.01 if m == "tiny-llava" else 0),
                          score_change_pct=-3.0 * s) for m in ("tiny-llava", "org/other model")
                     for s in (1, 3, 5)]
    errors = [dict(model="", dataset="oct", file_or_image="bad.dcm", stage="data",
                   reason=f"unreadable {HOME_PATH} (PatientID: 12345)"),
              dict(model="tiny-llava", dataset="oct", file_or_image="+img", stage="judge",
                   reason=f"401 from server, api_key={FAKE_KEY}")]
    run_info = {"argv": ["pytest", "--miqa-data", "/data/hospital/MediMeta-C",
                         f"--token={FAKE_KEY}"],
                "cwd": os.getcwd(), "home": str(Path.home() / "x" / "y"),
                "models": [{"id": "tiny-llava", "identity": "sha256:abc"}],
                "profile": "default", "thresholds": {"corruption_stability": 10.0},
                "seed": 0, "device": "cpu", "git_commit": "deadbeef",
                "start_time": "2026-01-01T00:00:00+00:00", "nan_value": math.nan,
                "report_dir": Path("/home/alice/reports")}
    return cells, scores, displacements, errors, run_info


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MIQA_OPENAI_API_KEY", ENV_KEY)
    try:
        out = tmp_path_factory.mktemp("report")
        cells, scores, disp, errors, run_info = synthetic()
        paths = write_reports(out, cells=cells, scores=scores, displacements=disp, errors=errors,
                              run_info=run_info, interrupted=True)
    finally:
        mp.undo()
    return out, paths, (cells, scores, disp, errors, run_info)


def _dicts(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


# --------------------------------------------------------------------------- files + columns


def test_files_produced(written):
    out, paths, _ = written
    names = {p.name for p in out.iterdir()}
    for n in ("matrix.csv", "scores.csv", "errors.csv", "run.json", "summary.html",
              "plot_displacement.png", "plot_family_correlation.png",
              "plot_heatmap_tiny-llava.png", "plot_attributes_tiny-llava.png",
              "plot_heatmap_org_other_model.png"):
        assert n in names, names
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    assert all(p.exists() and p.parent == out for p in paths.values())
    assert paths["summary"].name == "summary.html" and paths["matrix"].name == "matrix.csv"
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_columns_exactly_contract(written):
    out, _, (cells, scores, _, errors, _) = written
    m = _read(out / "matrix.csv")
    assert m[0][:18] == CONTRACT_MATRIX
    assert m[0] == list(MATRIX_COLUMNS + MATRIX_EXTRA_COLUMNS)
    assert m[0][18:] == ["reason", "n_needed", "n_dropped", "n_images", "ci_level"]
    assert len(m) == len(cells) + 1
    s = _read(out / "scores.csv")
    assert s[0][:8] == CONTRACT_SCORES
    assert s[0] == list(SCORES_COLUMNS + SCORES_EXTRA_COLUMNS)
    assert s[0][8:] == ["method", "error", "p1", "p2", "p3", "p4", "p5"]
    assert len(s) == len(scores) + 1
    e = _read(out / "errors.csv")
    assert e[0] == list(ERRORS_COLUMNS) == ["model", "dataset", "file_or_image", "stage", "reason"]
    assert len(e) == len(errors) + 1


def test_numbers_not_escaped_nan_empty(written):
    out, _, _ = written
    rows = _dicts(out / "matrix.csv")
    r = next(r for r in rows if r["test_id"].startswith("test_corruption_stability[tiny-llava-oct-contrast-2"))
    assert r["delta_pct"] == "-12.5"  # a genuine number: not escaped
    assert r["ci_low"] == "-15.5" and r["severity"] == "2" and r["n"] == "24"
    nan_row = next(r for r in rows if "contrast-4" in r["test_id"])
    assert nan_row["delta_pct"] == "" and nan_row["ci_low"] == "" and nan_row["n_needed"] == ""
    srows = _dicts(out / "scores.csv")
    exp = next(r for r in srows if r["image_id"] == "exp_0")
    assert exp["score"] == "-12.5" and exp["p1"] == "0.1" and exp["p5"] == "0.15"
    assert srows[0]["score"] == "" and srows[0]["parse_ok"] == "false"


def test_formula_cells_escaped(written):
    out, _, _ = written
    text = (out / "scores.csv").read_text(encoding="utf-8")
    rows = _read(out / "scores.csv")[1:]
    for row in rows:
        for cell in row:
            if cell and cell[0] in "=+-@\t\r":
                # only genuine numbers may start with a sign
                float(cell)
    raw = [r[7] for r in rows]
    assert "'=cmd|' /C calc'!A0" in raw and "'+1" in raw and "'-2" in raw
    assert "'@SUM(1)" in raw and "'\tTAB" in raw and "''=already quoted" in raw
    assert any(r[2].startswith("'-2_") for r in rows)
    assert "\n=cmd" not in text and ",=cmd" not in text
    for row in _read(out / "errors.csv")[1:]:
        assert not row[2].startswith("+")


def test_read_scores_csv_round_trip(written):
    out, _, (_, scores, _, _, _) = written
    back = read_scores_csv(out / "scores.csv")
    assert len(back) == len(scores)
    by_key = {(r["model"], r["image_id"], r["condition"]): r for r in back}
    for s in scores:
        if s.get("image_id") == "exp_0":
            continue
        r = by_key[(s["model"], s["image_id"], s["condition"])]
        assert r["image_id"] == s["image_id"]
        if s is not scores[1]:
            assert r["raw_text"] == s["raw_text"]
        assert r["parse_ok"] is s["parse_ok"]
        if math.isnan(s["score"]):
            assert math.isnan(r["score"])
        else:
            assert r["score"] == pytest.approx(s["score"])
        assert math.isnan(r["p2"])
    assert {r["raw_text"] for r in back} >= {"=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1)",
                                             "'=already quoted"}
    exp = next(r for r in back if r["image_id"] == "exp_0")
    assert exp["score"] == -12.5 and exp["p3"] == pytest.approx(0.3)


def test_read_scores_csv_validates(tmp_path):
    bad = tmp_path / "baseline.csv"
    bad.write_text("model,dataset,image_id,score\nm,d,i,3\n")
    with pytest.raises(MiqaUsageError) as ei:
        read_scores_csv(bad)
    msg = str(ei.value)
    assert "baseline.csv" in msg and "condition" in msg and "prompt_id" in msg
    assert "raw_text" in msg and "parse_ok" in msg
    with pytest.raises(MiqaUsageError, match="cannot read"):
        read_scores_csv(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(MiqaUsageError, match="empty"):
        read_scores_csv(empty)


# --------------------------------------------------------------------------- no leaks


def test_no_paths_keys_or_patient_fields_anywhere(written):
    out, _, _ = written
    home = str(Path.home())
    for p in out.iterdir():
        if p.suffix == ".png":
            data = p.read_bytes().decode("latin-1")
        else:
            data = p.read_text(encoding="utf-8")
        for leak in (FAKE_KEY, ENV_KEY, "abc.def.ghi", "/home/alice", "secret_study",
                     "/tmp/pytest-of-alice", "/data/hospital", "DOE^JOHN", "12345"):
            assert leak not in data, (p.name, leak)
        if home not in ("/", ""):
            assert home + "/" not in data, p.name
        assert os.getcwd() + "/" not in data and f'"{os.getcwd()}"' not in data, p.name
    info = json.loads((out / "run.json").read_text())
    assert info["interrupted"] is True
    assert info["argv"][2] == "<path>/MediMeta-C"
    assert info["nan_value"] is None and info["seed"] == 0
    assert info["thresholds"] == {"corruption_stability": 10.0}
    assert "<path>/img_001.dcm" in (out / "matrix.csv").read_text()


@pytest.mark.parametrize("text,expected", [
    (f"read {HOME_PATH} failed", "read <path>/img_001.dcm failed"),
    ("C:\\Users\\bob\\data\\x.png bad", "<path>/x.png bad"),
    ("dir /var/lib/data/ gone", "dir <path>/data gone"),
    ("key sk-abcdefgh123 here", "key <redacted> here"),
    ("Authorization: Bearer tok.en/123", "Authorization: <redacted>"),
    ("url http://localhost:8000/v1/chat ok", "url http://localhost:8000/v1/chat ok"),
    ("model org/name and rel/path/x.png", "model org/name and rel/path/x.png"),
    ("PatientName=DOE^JOHN PatientID: 42", "PatientName=<redacted> PatientID: <redacted>"),
    ("score 3.5, p=-0.2 / 5", "score 3.5, p=-0.2 / 5"),
    ("", ""),
    (None, ""),
])
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_scrub_env_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plainSecret42")
    monkeypatch.setenv("MIQA_OPENAI_API_KEY", "otherSecret99")
    assert scrub("x plainSecret42 y otherSecret99") == "x <redacted> y <redacted>"


@pytest.mark.parametrize("s", FORMULA_TEXTS + ["'", "''", "'-", "''+x", "-", "\r", "a=b"])
def test_escape_round_trip(s):
    e = escape_cell(s)
    assert unescape_cell(e) == s
    assert not (e and e[0] in "=+-@\t\r")


def test_sanitize_filename():
    assert sanitize_filename("org/model:v1 (x)") == "org_model_v1_x"
    assert sanitize_filename("../../etc/passwd") == "etc_passwd"
    assert sanitize_filename("") == "unnamed"
    long = sanitize_filename("a" * 300)
    assert len(long) <= 100 and re.fullmatch(r"[A-Za-z0-9._-]+", long)


# --------------------------------------------------------------------------- atomicity


def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "matrix.csv"
    safe_io.write_csv(target, ["a", "b"], [{"a": 1, "b": "x"}])
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safe_io.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        safe_io.write_csv(target, ["a", "b"], [{"a": i, "b": "y" * 100} for i in range(1000)])
    with pytest.raises(OSError):
        safe_io.atomic_write_text(tmp_path / "new.json", "{}")
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.csv"]  # no temp, no partial


def test_write_reports_crash_midway_leaves_previous_reports(tmp_path, monkeypatch):
    cells, scores, disp, errors, run_info = synthetic()
    write_reports(tmp_path, cells=cells[:3], scores=scores[:3], displacements=[], errors=[],
                  run_info={"seed": 1})
    snapshot = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # scores.csv
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(safe_io.os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_reports(tmp_path, cells=cells, scores=scores, displacements=disp, errors=errors,
                      run_info=run_info)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(snapshot)  # no temp files left
    assert (tmp_path / "scores.csv").read_bytes() == snapshot["scores.csv"]
    assert (tmp_path / "run.json").read_bytes() == snapshot["run.json"]
    # matrix.csv was already replaced completely: it parses and has every row
    assert len(_read(tmp_path / "matrix.csv")) == len(cells) + 1


# --------------------------------------------------------------------------- HTML


def test_html_headline_images_banner(written):
    out, _, (cells, *_rest) = written
    html = (out / "summary.html").read_text(encoding="utf-8")
    assert "This run was interrupted; results are partial." in html
    counts = report.verdict_counts(cells)
    assert counts["tiny-llava"]["fail"] > 0
    head = html[html.index('id="headline"'):html.index('id="heatmap"')]
    for model, d in counts.items():
        row = re.search(r"<tr><td>" + re.escape(model) + r"</td>(.*?)</tr>", head)
        assert row, model
        nums = re.findall(r'<td class="num">(\d+)</td>', row.group(1))
        assert nums == [str(d[v]) for v in ("pass", "fail", "inconclusive", "error", "not_applicable", "total")]
    # worst cells: first listed is a fail
    first = re.search(r"Worst cells.*?<tr><td>.*?</tr>\s*<tr>(.*?)</tr>", head, re.S).group(1)
    assert "v-fail" in first
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) >= 6
    for src in imgs:
        assert "/" not in src and (out / src).is_file()
    assert "<script" not in html.lower()
    assert "&lt;path&gt;/img_001.dcm" in html  # scrubbed and escaped
    assert "Spearman" in html and "Pearson" in html


def test_html_escapes_everything(tmp_path):
    evil = "<script>alert(1)</script>"
    cells = [_cell(evil, "ds<b>", "pixelation", 1, -20.0, "fail", reason=evil)]
    write_reports(tmp_path, cells=cells, scores=[], displacements=[],
                  errors=[dict(model=evil, dataset="d", file_or_image=evil, stage="data",
                               reason=evil)],
                  run_info={"argv": [evil], evil: evil})
    html = (tmp_path / "summary.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "interrupted; results are partial" not in html
    assert json.loads((tmp_path / "run.json").read_text())["interrupted"] is False


def test_empty_inputs(tmp_path):
    paths = write_reports(tmp_path, cells=[], scores=[], displacements=[], errors=[],
                          run_info={})
    assert set(paths) == {"matrix", "scores", "errors", "run", "summary"}
    assert _read(tmp_path / "matrix.csv") == [list(MATRIX_COLUMNS + MATRIX_EXTRA_COLUMNS)]
    assert read_scores_csv(tmp_path / "scores.csv") == []
    assert format_terminal_summary([]) == ["miqa: no property cells were executed"]


# --------------------------------------------------------------------------- terminal


def test_terminal_summary_fails_first():
    cells, *_ = synthetic()
    lines = format_terminal_summary(cells, max_lines=20, width=100)
    assert 0 < len(lines) <= 20 and all(len(line) <= 100 for line in lines)
    assert any("tiny-llava" in line for line in lines[:5])
    start = next(i for i, line in enumerate(lines) if line.startswith("worst cells"))
    verdicts = [line.split()[-1] for line in lines[start + 1:] if not line.startswith("...")]
    assert verdicts[0] == "fail"
    order = {"fail": 0, "error": 1, "inconclusive": 2}
    assert [order[v] for v in verdicts] == sorted(order[v] for v in verdicts)
    assert "pass" not in verdicts
    first = lines[start + 1]
    assert "-20.0%" in first and "[-23.0, -17.0]" in first and "10" in first
    assert lines[-1].startswith("... ") and "matrix.csv" in lines[-1]
    few = format_terminal_summary(cells, max_lines=8, width=60)
    assert len(few) <= 8 and all(len(line) <= 60 for line in few)
    ok = format_terminal_summary([_cell("m", "d", "pixelation", 1, 1.0, "pass")])
    assert ok[-1] == "all cells passed"


def test_import_is_cheap():
    code = ("import sys, miqa_checks.report, miqa_checks.safe_io; "
            "bad = [m for m in ('matplotlib', 'pandas', 'torch', 'numpy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_junit_properties():
    c = _cell("tiny-llava", "oct", "pixelation", 3, -12.5, "fail")
    c["ci_low"] = math.nan
    props = dict(report.junit_properties(c))
    assert list(props) == ["model", "dataset", "condition", "n", "delta_pct", "ci_low",
                           "ci_high", "threshold", "verdict"]
    assert props["delta_pct"] == "-12.5" and props["ci_low"] == "" and props["n"] == "24"
    assert props["condition"] == "pixelation-3" and props["verdict"] == "fail"


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path):
    import os
    import time

    from miqa_checks.safe_io import remove_stale_temp_files

    stale = tmp_path / ".scores.csv.miqa-abc12345.tmp"
    live = tmp_path / ".matrix.csv.miqa-def45678.tmp"
    keep = tmp_path / "scores.csv"
    for f in (stale, live, keep):
        f.write_text("x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(keep, (old, old))
    assert remove_stale_temp_files(tmp_path) == 1
    assert not stale.exists() and live.exists() and keep.exists()


def test_displacement_rho_comes_with_its_ci_and_family_r_with_counts():
    from miqa_checks.report_plots import displacement_stats, family_correlation

    points = [{"model": "m", "displacement": x, "score_change_pct": -10 * x} for x in (0.1, 0.2, 0.3, 0.4, 0.5)]
    st = displacement_stats(points)["m"]
    assert st["rho"] == -1.0 and st["ci_low"] <= st["rho"] <= st["ci_high"] and st["n"] == 5
    rows = [{"model": m, "dataset": "d", "image_id": str(i), "condition": "clean", "prompt_id": "base", "score": s * k}
            for m, k in (("a", 1), ("b", -1)) for i, s in enumerate([1.0, 2.0, 3.0, 4.5])]
    rows.append({"model": "a", "dataset": "d", "image_id": "only-a", "condition": "clean", "prompt_id": "base", "score": 2.0})
    models, r, n = family_correlation(rows)
    assert models == ["a", "b"] and abs(r[0][1] + 1.0) < 1e-12 and r[0][0] == 1.0
    assert n == [[5, 4], [4, 4]]
