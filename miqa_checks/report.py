"""Reports: matrix.csv, scores.csv, errors.csv, run.json, summary.html + PNG plots.

Called once per session in the controller process by the pytest plugin::

    paths = write_reports(report_dir, cells=..., scores=..., displacements=..., errors=...,
                          run_info=..., interrupted=False)
    lines = format_terminal_summary(cells)

and, for ``--miqa-baseline``, :func:`read_scores_csv` loads a ``scores.csv`` back.

Importing this module is cheap (stdlib only); matplotlib is imported lazily by
:mod:`miqa_checks.report_plots`, with the Agg canvas and no pyplot state.
Every file is written atomically (:mod:`miqa_checks.safe_io`); every string cell is scrubbed
of local paths / keys / patient fields and formula-escaped. ``junit.xml`` is written by pytest.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from miqa_checks.errors import MiqaUsageError
from miqa_checks.safe_io import (
    atomic_write_text,
    format_float,
    sanitize_filename,
    scrub,
    unescape_cell,
    write_csv,
)

__all__ = [
    "MATRIX_COLUMNS",
    "MATRIX_EXTRA_COLUMNS",
    "SCORES_COLUMNS",
    "SCORES_EXTRA_COLUMNS",
    "ERRORS_COLUMNS",
    "VERDICTS",
    "write_reports",
    "read_scores_csv",
    "format_terminal_summary",
    "junit_properties",
    "worst_cells",
    "verdict_counts",
]

# ---- the user-facing contract (shared/DESIGN.md "Outputs"): names and order are fixed ----
MATRIX_COLUMNS = (
    "test_id", "property", "model", "dataset", "modality", "condition", "corruption",
    "severity", "attribute", "n", "clean_mean", "cond_mean", "delta_pct", "ci_low", "ci_high",
    "p_value", "threshold", "verdict",
)
MATRIX_EXTRA_COLUMNS = ("reason", "n_needed", "n_dropped", "n_images", "ci_level")
SCORES_COLUMNS = ("model", "dataset", "image_id", "condition", "prompt_id", "score", "parse_ok",
                  "raw_text")
SCORES_EXTRA_COLUMNS = ("method", "error", "p1", "p2", "p3", "p4", "p5")
ERRORS_COLUMNS = ("model", "dataset", "file_or_image", "stage", "reason")
DISPLACEMENT_KEYS = ("model", "dataset", "corruption", "severity", "displacement",
                     "score_change_pct")
VERDICTS = ("pass", "fail", "inconclusive", "error", "not_applicable")
JUNIT_PROPERTY_KEYS = ("model", "dataset", "condition", "n", "delta_pct", "ci_low", "ci_high",
                       "threshold", "verdict")

_FLOAT_SCORE_COLUMNS = ("score", "p1", "p2", "p3", "p4", "p5")
_VERDICT_RANK = {"fail": 0, "error": 1, "inconclusive": 2, "not_applicable": 3, "pass": 4}


# --------------------------------------------------------------------------- small helpers


def as_float(x: Any) -> float:
    """``x`` as a float; None / '' / unparsable -> NaN."""
    if x is None:
        return math.nan
    if isinstance(x, bool):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def is_finite(x: Any) -> bool:
    return math.isfinite(as_float(x))


def _text(x: Any) -> str:
    return "" if x is None else str(x)


def _abs_delta(cell: Mapping[str, Any]) -> float:
    d = as_float(cell.get("delta_pct"))
    return abs(d) if math.isfinite(d) else -1.0


def worst_cells(cells: Iterable[Mapping[str, Any]], *, include_pass: bool = True) -> list[dict]:
    """Cells ordered worst first: fail, error, inconclusive, pass; within each by |delta_pct|
    descending (NaN last), then test_id for a stable order."""
    out = [dict(c) for c in cells
           if include_pass or _text(c.get("verdict")) != "pass"]
    out.sort(key=lambda c: (_VERDICT_RANK.get(_text(c.get("verdict")), 1), -_abs_delta(c),
                            _text(c.get("test_id"))))
    return out


def verdict_counts(cells: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{model: {pass, fail, inconclusive, error, total}}`` in first-seen model order."""
    counts: dict[str, dict[str, int]] = {}
    for c in cells:
        m = _text(c.get("model"))
        d = counts.setdefault(m, {v: 0 for v in (*VERDICTS, "total")})
        v = _text(c.get("verdict"))
        d[v if v in VERDICTS else "error"] += 1
        d["total"] += 1
    return counts


def request_failures(scores: Iterable[Mapping[str, Any]], errors: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per model whose requests failed: how many of how many, by stage, and the most
    common reason (``errors.csv`` holds every record)."""
    totals: dict[str, int] = {}
    for row in scores:
        totals[_text(row.get("model"))] = totals.get(_text(row.get("model")), 0) + 1
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for e in errors:
        if _text(e.get("stage")) in ("data", "score", "parse", "corruption", "judge"):
            by_model.setdefault(_text(e.get("model")), []).append(e)
    lines = []
    for model, records in by_model.items():
        stages: dict[str, int] = {}
        reasons: dict[str, int] = {}
        for e in records:
            stages[_text(e.get("stage"))] = stages.get(_text(e.get("stage")), 0) + 1
            reasons[_text(e.get("reason"))] = reasons.get(_text(e.get("reason")), 0) + 1
        failed = sum(k for stage, k in stages.items() if stage != "judge")
        top = max(reasons, key=lambda r: reasons[r])
        what = ", ".join(f"{k} {stage}" for stage, k in sorted(stages.items(), key=lambda x: -x[1]))
        lines.append(scrub(f"{model}: {failed} of {totals.get(model, failed)} requests failed ({what}); "
                           f"most often: {top[:160]}"))
    return lines


def undecided_line(cells: Iterable[Mapping[str, Any]]) -> str | None:
    """How many cells could not decide and how many units (images, or groups under ``unit =
    "group"``) would decide half of them and all of them; None if none."""
    undecided = [c for c in cells if _text(c.get("verdict")) == "inconclusive"]
    if not undecided:
        return None
    needed = sorted(int(as_float(c.get("n_needed"))) for c in undecided if is_finite(c.get("n_needed")))
    need = f": {needed[len(needed) // 2]} units would decide half of them, {needed[-1]} all" if needed else ""
    return f"{len(undecided)} cell(s) inconclusive{need} (n_needed in matrix.csv)"


def gate_lines(cells: list[dict], scores: list[dict], errors: list[dict]) -> list[str]:
    """The lines every summary (terminal, summary.md, summary.html) shows above the cells."""
    lines = request_failures(scores, errors)
    undecided = undecided_line(cells)
    return lines + ([undecided] if undecided else [])


def interval_label(cell: Mapping[str, Any]) -> str:
    """``90% CI``: the level of the cell's printed interval (``1 - 2 alpha``, the decision's)."""
    level = as_float(cell.get("ci_level"))
    return f"{level * 100:.0f}% CI" if math.isfinite(level) else "CI"


def fmt_num(x: Any, spec: str = ".3g") -> str:
    """A number for display: '' for NaN/None."""
    f = as_float(x)
    if not math.isfinite(f):
        return "" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    return format(f, spec)


def fmt_pct(x: Any) -> str:
    f = as_float(x)
    return f"{f:+.1f}%" if math.isfinite(f) else "n/a"


def fmt_ci(lo: Any, hi: Any) -> str:
    a, b = as_float(lo), as_float(hi)
    if not (math.isfinite(a) or math.isfinite(b)):
        return ""
    return f"[{fmt_num(a, '.1f') or '?'}, {fmt_num(b, '.1f') or '?'}]"


def junit_properties(cell: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The JUnit ``<property>`` pairs for one cell (DESIGN.md: model, dataset, condition, n,
    delta_pct, ci_low, ci_high, threshold, verdict); numbers as in matrix.csv, text scrubbed."""
    out = []
    for k in JUNIT_PROPERTY_KEYS:
        v = cell.get(k)
        if isinstance(v, str) or v is None:
            s = scrub(v)
        elif isinstance(v, bool):
            s = str(v).lower()
        elif isinstance(v, int):
            s = str(v)
        else:
            s = format_float(as_float(v))
        out.append((k, s))
    return out


def _jsonable(x: Any) -> Any:
    """run_info -> JSON-safe (strings scrubbed, NaN -> null, Paths/numpy -> plain)."""
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, str):
        return scrub(x)
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {scrub(str(k)): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return scrub(os.fspath(x))
    if type(x).__module__ == "numpy":
        if hasattr(x, "tolist"):
            return _jsonable(x.tolist())
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return scrub(str(x))


# --------------------------------------------------------------------------- write_reports


def write_reports(
    report_dir: Path,
    *,
    cells: list[dict],
    scores: list[dict],
    displacements: list[dict],
    errors: list[dict],
    run_info: dict,
    interrupted: bool = False,
) -> dict[str, Path]:
    """Write every report file into ``report_dir`` (created if needed); return their paths.

    Keys of the result: ``matrix``, ``scores``, ``errors``, ``run``, ``summary`` and one key per
    plot, named as its file without ``.png`` (``plot_heatmap_<model>``, ``plot_attributes_<model>``,
    ``plot_displacement``, ``plot_family_correlation``). CSVs and run.json are written first,
    then plots (a failing plot is reported in the HTML, never raised), summary.html last.
    Each file is replaced atomically.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    cells = list(cells or [])
    scores = list(scores or [])
    displacements = list(displacements or [])
    errors = list(errors or [])
    paths: dict[str, Path] = {}

    paths["matrix"] = write_csv(report_dir / "matrix.csv",
                                MATRIX_COLUMNS + MATRIX_EXTRA_COLUMNS, cells)
    paths["scores"] = write_csv(report_dir / "scores.csv",
                                SCORES_COLUMNS + SCORES_EXTRA_COLUMNS, _score_rows(scores))
    paths["errors"] = write_csv(report_dir / "errors.csv", ERRORS_COLUMNS, errors)

    info = _jsonable(dict(run_info or {}))
    info["interrupted"] = bool(interrupted)
    paths["run"] = atomic_write_text(
        report_dir / "run.json", json.dumps(info, indent=2, allow_nan=False) + "\n")

    plot_problems: list[str] = []
    plots: list[dict] = []
    try:
        from miqa_checks import report_plots

        plots = report_plots.make_plots(report_dir, cells=cells, scores=scores,
                                        displacements=displacements, problems=plot_problems)
    except Exception as exc:  # plotting must never cost the user the CSVs / HTML
        plot_problems.append(scrub(f"plots skipped: {type(exc).__name__}: {exc}"))
    for p in plots:
        paths[p["path"].stem] = p["path"]

    from miqa_checks import report_html

    html = report_html.render_summary(cells=cells, scores=scores, displacements=displacements,
                                      errors=errors, run_info=info, plots=plots,
                                      problems=plot_problems, interrupted=interrupted,
                                      files=[p.name for p in paths.values()])
    paths["summary"] = atomic_write_text(report_dir / "summary.html", html)
    return paths


def _score_rows(scores: list[dict]) -> Iterable[dict]:
    """Expand ``probs`` (tuple of 5) into p1..p5 when the caller passed it that way."""
    for s in scores:
        probs = s.get("probs")
        if probs is not None and "p1" not in s:
            s = dict(s)
            for i, p in enumerate(list(probs)[:5]):
                s[f"p{i + 1}"] = p
        yield s


# --------------------------------------------------------------------------- baseline reading


def read_scores_csv(path: str | os.PathLike) -> list[dict]:
    """Load a ``scores.csv`` (ours, or a hand-made one with the required columns).

    Returns one dict per row: strings un-escaped (the reverse of the formula escape),
    ``score`` and ``p1..p5`` as floats (NaN when empty), ``parse_ok`` as bool (empty -> True).
    Raises :class:`MiqaUsageError` when the file is missing/unreadable or lacks required columns
    (``model, dataset, image_id, condition, prompt_id, score, parse_ok, raw_text``).
    """
    p = Path(path)
    name = p.name
    try:
        fh = open(p, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise MiqaUsageError(
            f"--miqa-baseline: cannot read {name!s} ({exc.strerror or exc}); pass the scores.csv "
            f"of an earlier run") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise MiqaUsageError(f"--miqa-baseline: {name} is empty; expected a scores.csv with "
                                 f"columns {', '.join(SCORES_COLUMNS)}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MiqaUsageError(f"--miqa-baseline: {name} is not a readable CSV ({exc})") from None
        header = [h.strip() for h in header]
        missing = [c for c in SCORES_COLUMNS if c not in header]
        if missing:
            raise MiqaUsageError(
                f"--miqa-baseline: {name} is missing required column(s): {', '.join(missing)} "
                f"(a scores.csv needs {', '.join(SCORES_COLUMNS)})")
        rows: list[dict] = []
        try:
            for raw in reader:
                if not raw or all(not c for c in raw):
                    continue
                row = {h: unescape_cell(raw[i]) if i < len(raw) else ""
                       for i, h in enumerate(header)}
                for c in _FLOAT_SCORE_COLUMNS:
                    if c in row:
                        row[c] = as_float(row[c]) if row[c].strip() else math.nan
                row["parse_ok"] = _parse_bool(row.get("parse_ok", ""))
                rows.append(row)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MiqaUsageError(f"--miqa-baseline: {name} line {reader.line_num}: {exc}") from None
    return rows


def read_baseline_scores(path: str | os.PathLike) -> dict[tuple[str, str, str, str], float]:
    """A ``--miqa-baseline`` file as {(dataset, image_id, condition, prompt_id): score (NaN if none)}.

    The file must hold the scores of exactly one model, each empty or finite on the 1..5 scale
    (out of it only where its ``raw_text`` gives that score by the parse rule); a
    :class:`MiqaUsageError` naming the file and data row otherwise.
    """
    rows = read_scores_csv(path)
    models = sorted({r["model"] for r in rows})
    if len(models) != 1:
        raise MiqaUsageError(
            f"--miqa-baseline {Path(path).name}: must hold the scores of one model, found {len(models)}: {', '.join(models)}"
        )
    from .engine.store import answer_gives

    for number, r in enumerate(rows, start=1):
        score = r["score"]
        if math.isnan(score) or (1.0 <= score <= 5.0) or (math.isfinite(score) and answer_gives(r["raw_text"], score)):
            continue  # no score, on the scale, or a real out-of-range answer ("7/10") recorded with its text
        raise MiqaUsageError(
            f"--miqa-baseline {Path(path).name}: data row {number} ({r['dataset']}, {r['image_id']}, {r['condition']}, "
            f"{r['prompt_id']}) has score {score!r}; scores must be finite and on the 1..5 scale (empty for none)"
        )
    return {(r["dataset"], r["image_id"], r["condition"], r["prompt_id"]): r["score"] for r in rows}


def _parse_bool(s: Any) -> bool:
    t = _text(s).strip().lower()
    if t in ("", "1", "true", "t", "yes", "y"):
        return True
    if t in ("0", "false", "f", "no", "n"):
        return False
    return True


# --------------------------------------------------------------------------- terminal summary


def format_terminal_summary(cells: list[dict], *, max_lines: int = 20, width: int = 100,
                            notes: Iterable[str] = ()) -> list[str]:
    """A compact table for the end of the pytest session (at most ``max_lines`` lines, each at
    most ``width`` characters): verdict counts per model, the ``notes`` (``gate_lines``), then the
    worst cells (fail, error, inconclusive; by |delta_pct|) with delta, CI, threshold and verdict."""
    cells = list(cells or [])
    max_lines = max(int(max_lines), 3)
    width = max(int(width), 40)
    lines: list[str] = []

    def add(s: str) -> None:
        lines.append(s if len(s) <= width else s[: width - 3] + "...")

    if not cells:
        return ["miqa: no property cells were executed"]
    counts = verdict_counts(cells)
    mw = min(max(len("model"), *(len(m) for m in counts)), max(width - 40, 10))
    add(f"miqa: {len(cells)} cells | matrix.csv / summary.html in the report dir")
    add(f"{'model':<{mw}}  {'pass':>5} {'fail':>5} {'inconcl':>7} {'error':>5} {'n/a':>5}")
    models = list(counts.items())
    budget_models = max(1, min(len(models), max_lines // 3))
    for m, d in models[:budget_models]:
        name = m if len(m) <= mw else m[: mw - 1] + "~"
        add(f"{name:<{mw}}  {d['pass']:>5} {d['fail']:>5} {d['inconclusive']:>7} {d['error']:>5} {d['not_applicable']:>5}")
    if len(models) > budget_models:
        add(f"... {len(models) - budget_models} more model(s)")
    for note in notes:
        add(note)

    bad = worst_cells(cells, include_pass=False)
    room = max_lines - len(lines) - 1
    if not bad:
        add("all cells passed")
        return lines[:max_lines]
    if room < 1:
        return lines[:max_lines]
    shown = bad[:room] if len(bad) <= room else bad[: room - 1]
    tail = 7 + 1 + 18 + 1 + 18 + 1 + 12  # delta ci thr verdict columns
    tw = max(width - tail - 4, 16)
    add(f"{'worst cells':<{tw}}  {'delta':>7} {'CI':>18} {'threshold':<18} {'verdict':<12}")
    for c in shown:
        tid = _text(c.get("test_id")) or f"{c.get('property')}[{c.get('model')}-{c.get('condition')}]"
        tid = scrub(tid)
        if len(tid) > tw:  # keep both ends: the property name and the parametrisation
            tail = (tw - 1) // 2
            tid = tid[: tw - 1 - tail] + "~" + tid[-tail:]
        thr = _text(c.get("threshold"))[:18]
        add(f"{tid:<{tw}}  {fmt_pct(c.get('delta_pct')):>7} "
            f"{fmt_ci(c.get('ci_low'), c.get('ci_high')):>18} {thr:<18} "
            f"{_text(c.get('verdict')):<12}".rstrip())
    if len(shown) < len(bad):
        add(f"... {len(bad) - len(shown)} more non-passing cell(s) (see matrix.csv)")
    return lines[:max_lines]


def unique_plot_name(prefix: str, key: str, used: set[str]) -> str:
    """``<prefix>_<sanitized key>.png``, made unique within ``used``."""
    base = f"{prefix}_{sanitize_filename(key)}" if key else prefix
    name, k = base + ".png", 2
    while name in used:
        name, k = f"{base}_{k}.png", k + 1
    used.add(name)
    return name
