"""A warm rerun does not redraw plots whose inputs did not change, and still writes the same
summary; a plot whose inputs (or PNG) changed is drawn again."""

from __future__ import annotations

import json
import re

from audit_runner import run_audit

ARGS = ("--miqa-model=sim-paper", "-k", "samples_ct and (pixelation or institution or embedding)")


def _pngs(report_dir):
    return {p.name: p.stat().st_mtime_ns for p in report_dir.glob("plot_*.png")}


def test_a_warm_rerun_reuses_unchanged_plots(tmp_path):
    cold = run_audit(tmp_path, *ARGS)
    assert cold.returncode in (0, 1), cold.output[-2000:]  # passed, or failed on sim-paper's planted defects
    drawn = _pngs(cold.report_dir)
    assert len(drawn) >= 2
    shown = set(re.findall(r"plot_[\w.-]*\.png", (cold.report_dir / "summary.html").read_text()))
    warm = run_audit(tmp_path, *ARGS)
    assert warm.returncode == cold.returncode and warm.run_info["requests_inferred"] == 0
    assert _pngs(warm.report_dir) == drawn  # same files, not written again
    assert set(re.findall(r"plot_[\w.-]*\.png", (warm.report_dir / "summary.html").read_text())) == shown == set(drawn)

    victim = sorted(drawn)[0]
    (cold.report_dir / victim).write_bytes(b"not the plot")
    again = run_audit(tmp_path, *ARGS)
    assert again.returncode == cold.returncode
    after = _pngs(again.report_dir)
    assert after[victim] != drawn[victim]  # a PNG changed since: drawn again
    assert (again.report_dir / victim).read_bytes()[:4] == b"\x89PNG"
    assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in drawn.items() if k != victim}
    memo = json.loads((again.report_dir / ".plots.json").read_text())
    assert len(memo) >= len(drawn)
