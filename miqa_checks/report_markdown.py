"""``summary.md``: the run in a few lines of Markdown, for a CI job's step summary.

A CI job appends it to ``$GITHUB_STEP_SUMMARY`` (or shows it in a merge request): verdict counts
per model, the gate lines (failed requests, undecided cells), and the worst cells.
"""

from __future__ import annotations

from typing import Any, Mapping

from miqa_checks.report import VERDICTS, fmt_ci, fmt_pct, gate_lines, interval_label, verdict_counts, worst_cells
from miqa_checks.safe_io import scrub

MAX_WORST = 10


def _cell(x: Any) -> str:
    """Text safe inside a Markdown table cell: one line, no pipes, no HTML."""
    text = scrub(str(x if x is not None else ""))
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(cells: list[dict], scores: list[dict], errors: list[dict], run_info: Mapping[str, Any],
                    *, interrupted: bool = False) -> str:
    """The summary as Markdown text (ends with a newline)."""
    lines = ["## miqa-checks summary", ""]
    if interrupted:
        lines += ["**This run was interrupted; results are partial.**", ""]
    counts = verdict_counts(cells)
    failing = sum(d["fail"] + d["error"] for d in counts.values())
    verdict = "FAILED" if failing else "passed"
    lines += [f"**{verdict}**: {len(cells)} property cells, {failing} failing or in error; "
              f"profile `{_cell(run_info.get('profile', ''))}`, seed {_cell(run_info.get('seed', ''))}.", ""]
    if counts:
        lines += ["| model | " + " | ".join(VERDICTS) + " | total |",
                  "|---|" + "---:|" * (len(VERDICTS) + 1)]
        lines += [f"| {_cell(m)} | " + " | ".join(str(d[v]) for v in VERDICTS) + f" | {d['total']} |"
                  for m, d in counts.items()]
        lines.append("")
    lines += [f"- {_cell(note)}" for note in gate_lines(cells, scores, errors)]
    bad = worst_cells(cells, include_pass=False)[:MAX_WORST]
    if bad:
        lines += ["", f"Worst cells (all in `matrix.csv`):", "",
                  f"| test | change | {interval_label(bad[0])} | threshold | n | verdict |", "|---|---:|---:|---|---:|---|"]
        lines += [f"| {_cell(c.get('test_id'))} | {fmt_pct(c.get('delta_pct'))} | "
                  f"{fmt_ci(c.get('ci_low'), c.get('ci_high'))} | {_cell(c.get('threshold'))} | "
                  f"{_cell(c.get('n'))} | {_cell(c.get('verdict'))} |" for c in bad]
    return "\n".join(lines) + "\n"
