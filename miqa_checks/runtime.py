"""What the plugin does at run time: build the engine, give a test its cell's data, report its
decision, merge the processes' parts and write the reports.

Kept apart from ``plugin.py`` and ``session.py`` so that loading the plugin stays light; this
module is imported only once an audit test runs or a session with audit results finishes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .engine.store import ResultStore
from .config import Settings
from .engine import Engine
from .errors import JudgeError
from .junit import write_junit
from .matrix import model_label
from .properties import REGISTRY, Cell
from .properties.check import CellCheck, CellOutcome, error_verdict, not_applicable_verdict
from .properties.verdicts import Verdict
from .stats import ERROR, FAIL, INCONCLUSIVE, NOT_APPLICABLE
from .report import gate_lines, interval_label, junit_properties, write_reports
from .report_markdown import render_markdown
from .published import COLUMNS as PUBLISHED_COLUMNS
from .published import published_table
from .safe_io import atomic_write_text, remove_stale_temp_files, scrub, secrets_pinned, write_csv

if TYPE_CHECKING:
    from .session import MiqaState

VERSIONED_PACKAGES = ("miqa-checks", "torch", "torchvision", "transformers", "numpy", "scipy", "pytest", "pytest-xdist", "pydicom")


def _worker() -> tuple[str, int, int]:
    """(name, index, count) of this process under pytest-xdist; ("main", 0, 1) otherwise."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return name, int(name[2:]) if name.startswith("gw") else 0, count


def build_engine(state: "MiqaState") -> Engine:
    """An engine on the shared result store (a throw-away store under --miqa-no-cache)."""
    name, index, count = _worker()
    folder = state.settings.cache_dir or (state.parts_dir / "store")
    return Engine(state.settings, store=ResultStore(folder, state.run_id), worker=name, worker_index=index, worker_count=count)


def _message(row: dict[str, Any]) -> str:
    def num(x: Any) -> str:
        return "nan" if x is None or x != x else f"{x:.4g}"

    return (
        f"{row['verdict']}: {row['reason']} "
        f"[statistic {num(row['delta_pct'])}, {interval_label(row)} {num(row['ci_low'])}..{num(row['ci_high'])}, "
        f"threshold {row['threshold']}, n={row['n']}, p_adj={num(row['p_value'])}]"
    )


def _gives_embeddings(engine: Engine, cell: Cell) -> bool:
    """Whether the cell's judge gives embeddings; a server that cannot be asked counts as giving
    them, so that its cells fail on the lost requests (an error) rather than skip."""
    try:
        return engine.judge(cell.model).supports_embeddings()
    except JudgeError:
        return True


def cell_check(node: pytest.Item, cell: Cell, engine: Engine, state: "MiqaState", key: Any, *,
               override: Any = None) -> CellCheck:
    """The ``miqa`` fixture: the cell's data from the engine; its one decision attaches the matrix
    row and JUnit properties to the test and sets the outcome."""
    settings = state.settings

    def model_loaded() -> Verdict | None:
        if engine.identity(cell.model) is not None:
            return None
        reasons = [e["reason"] for e in engine.errors if e["stage"] == "judge" and e["model"] == cell.label]
        return error_verdict(f"model {cell.label} could not be loaded: {reasons[0] if reasons else 'unknown reason'}")

    def embeddings_served() -> Verdict | None:
        if not any(spec.embed for spec in cell.requests()) or _gives_embeddings(engine, cell):
            return None
        return not_applicable_verdict(
            f"model {cell.label} gives no embeddings (a served model without an embeddings endpoint "
            "that takes images): this property needs them"
        )

    prop = REGISTRY[cell.property]
    return CellCheck(
        cell, engine.image_ids(cell.dataset), engine.lookup_for(cell), settings.thresholds,
        family_size=state.family_size(cell), seed=settings.seed, baseline=state.baseline_scores,
        tolerance=prop.tolerance_for(settings.thresholds, cell, override), groups=engine.groups(cell.dataset),
        on_decide=lambda outcome: report_outcome(node, cell, outcome, settings, key),
        prechecks=(model_loaded, embeddings_served), context={"engine": engine},
    )


def report_outcome(node: pytest.Item, cell: Cell, outcome: CellOutcome, settings: Settings, key: Any) -> None:
    """Attach the cell's matrix row and JUnit properties to the test; fail or skip it as its verdict says."""
    v = outcome.verdict
    row = {
        **cell.row(), "test_id": node.name,
        "n": v.n, "clean_mean": v.ref_mean, "cond_mean": v.cond_mean, "delta_pct": v.statistic,
        "ci_low": v.ci_low, "ci_high": v.ci_high, "p_value": v.p_value, "threshold": v.threshold,
        "verdict": v.outcome, "reason": scrub(v.reason), "n_needed": v.n_needed, "n_dropped": v.n_dropped,
        "n_images": v.n_images or v.n, "ci_level": 1 - 2 * settings["alpha"],
    }
    node.stash[key] = {"row": row, "displacements": outcome.displacements}
    node.user_properties.extend(junit_properties(row))
    message = _message(row)
    if v.outcome in (FAIL, ERROR):
        pytest.fail(message, pytrace=False)
    if v.outcome == NOT_APPLICABLE:
        pytest.skip(f"not applicable: {row['reason']}")
    if v.outcome == INCONCLUSIVE:
        if settings["inconclusive"] == "fail":
            pytest.fail(f"inconclusive, and the inconclusive policy is 'fail': {message}", pytrace=False)
        pytest.skip(message)


def undecided(check: CellCheck) -> None:
    """An audit test returned without an ``assert_*`` call: its cell is an error."""
    check.decide(error_verdict(f"{check.cell.property}: the test made no decision (it must call one miqa.assert_* helper)"))


def inconclusive_gate(settings: Settings, cells: list[dict[str, Any]]) -> str | None:
    """Why the run fails under an ``inconclusive = fail-above:<share>`` policy; None when it does not."""
    policy = settings["inconclusive"]
    if not policy.startswith("fail-above:") or not cells:
        return None
    limit = float(policy.partition(":")[2])
    share = sum(c["verdict"] == INCONCLUSIVE for c in cells) / len(cells)
    if share <= limit:
        return None
    return f"{share:.1%} of the cells are inconclusive, above the policy's {limit:.1%} (inconclusive = {policy!r})"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_commit(folder: Path) -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _own_part(state: "MiqaState") -> dict[str, Any]:
    """This process's share of the results: scores used, error records, judge provenance, as
    plain JSON values (what a worker's part file holds); the engine is closed."""
    engine = state.engine
    part = {
        "worker": _worker()[0],
        "scores": [_plain_row(r) for r in engine.score_rows()],
        "errors": json.loads(json.dumps(engine.errors + engine.result_errors() + engine.store.error_records(),
                                        default=_json_default)),
        "provenance": json.loads(json.dumps(engine.provenance(), default=_json_default)),
        "inferred": engine.inferred,
        "used": len(engine.used),
    }
    engine.close()
    return part


_PLAIN = (str, float, int, bool, type(None))


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A scores row with numpy scalars made plain, as a JSON round trip would (a cell at a time)."""
    if all(type(v) in _PLAIN for v in row.values()):
        return row
    return {k: v if type(v) in _PLAIN else _json_default(v) for k, v in row.items()}


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _read_parts(state: "MiqaState") -> list[dict[str, Any]]:
    if not state.parts_dir.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(state.parts_dir.glob("*.json"))]


def finish_session(state: "MiqaState", *, interrupted: bool) -> str | None:
    """Every process writes its part; the controller (or the single process) merges and reports.

    Returns why the run must fail although no test did (the inconclusive policy), else None.
    """
    own = _own_part(state) if state.engine is not None else None
    if state.is_worker:
        if own is not None:  # the controller merges it
            state.parts_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(state.parts_dir / f"{own['worker']}.json", json.dumps(own))
        return None
    parts = sorted(_read_parts(state) + ([own] if own is not None else []), key=lambda p: p["worker"])
    if not parts and not state.cell_rows:
        return None  # not an audit run (e.g. the project's self-tests)
    with secrets_pinned():  # the API-key env values read once for the tens of thousands of cells scrubbed
        return _report(state, parts, interrupted=interrupted)


def _report(state: "MiqaState", parts: list[dict[str, Any]], *, interrupted: bool) -> str | None:
    """Merge the processes' parts and write every report; why the run must fail, else None."""
    settings = state.settings
    order = {c.test_id: i for i, c in enumerate(state.cells)}
    cells = sorted(state.cell_rows.values(), key=lambda r: order.get(r["test_id"], len(order)))
    scores = {}
    for part in parts:
        for row in part["scores"]:
            scores[(row["model"], row["dataset"], row["image_id"], row["condition"], row["prompt_id"])] = row
    errors = {}
    for part in parts:
        for e in part["errors"]:
            errors[tuple(sorted(e.items()))] = e
    provenance: dict[str, Any] = {}
    for part in parts:
        provenance.update(part["provenance"])
    run_info = {
        "package": "miqa-checks",
        "versions": _versions(),
        "models": [{"label": model_label(m), "spec": scrub(m), **provenance.get(model_label(m), {})} for m in settings.models],
        "data": [scrub(d) for d in settings.data],
        "profile": settings.profile,
        "thresholds": settings.thresholds,
        "settings_from": settings.sources,
        "seed": settings.seed,
        "device": settings.device,
        "batch_size": settings.batch_size or "auto",
        "git_commit": _git_commit(state.config.rootpath),
        "start": _iso(state.started),
        "end": _iso(time.time()),
        "argv": [scrub(a) for a in state.config.invocation_params.args],
        "workers": len(parts),
        "requests_inferred": sum(p["inferred"] for p in parts),
        "requests_used": sum(p["used"] for p in parts),
    }
    report_dir = settings.report_dir
    remove_stale_temp_files(report_dir)
    score_rows = sorted(scores.values(), key=lambda r: (r["model"], r["dataset"], r["image_id"], r["condition"], r["prompt_id"]))
    error_rows = sorted(errors.values(), key=lambda e: (e["model"], e["dataset"], e["file_or_image"], e["reason"]))
    write_reports(
        report_dir,
        cells=cells,
        scores=score_rows,
        displacements=sorted(state.displacements, key=lambda d: (d["model"], d["dataset"], d["corruption"], d["severity"])),
        errors=error_rows,
        run_info=run_info,
        interrupted=interrupted,
    )
    state.gate_lines = gate_lines(cells, score_rows, error_rows)
    gate_failure = inconclusive_gate(settings, cells)
    if gate_failure:
        state.gate_lines.append(f"run fails: {gate_failure}")
    write_csv(report_dir / "published.csv", PUBLISHED_COLUMNS, published_table(score_rows))
    write_junit(report_dir / "junit.xml", state.cases, scrub=scrub)
    atomic_write_text(report_dir / "summary.md", render_markdown(cells, score_rows, error_rows, run_info, interrupted=interrupted))
    shutil.rmtree(state.parts_dir, ignore_errors=True)
    return gate_failure
