"""The run's state, shared by the plugin (hooks, fixtures) and the run-time side (runtime.py).

Nothing is resolved until an audit test is collected: :meth:`MiqaState.setup` (settings, data
sources, model specs, baseline) runs when the first ``@audit`` test is parametrised, so a project
that has the plugin installed but no audit test pays nothing (no numpy, no scipy). An xdist
controller, which never collects, sets up in ``pytest_configure`` instead. Light at import.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import MiqaUsageError
from .junit import CaseRecord
from .properties import REGISTRY, Cell, plan_cells
from .properties.base import alpha_shares

if TYPE_CHECKING:
    from .config import Settings

STATE = pytest.StashKey["MiqaState"]()
ERROR, NOT_APPLICABLE = "error", "not_applicable"


class MiqaState:
    """Per-process state: settings, the planned cells, and (controller side) collected results.

    ``cli``: option values from the command line (dest -> value, None when not given).
    """

    def __init__(self, config: pytest.Config, cli: dict[str, Any]) -> None:
        self.config = config
        self.cli = cli
        self.run_id = getattr(config, "workerinput", {}).get("miqa_run_id") or uuid.uuid4().hex
        self.started = time.time()
        self._settings: Settings | None = None
        self.datasets: dict[str, str] = {}  # dataset id -> modality text
        self.baseline_scores: dict[tuple[str, str, str, str], float] | None = None
        self.usage_error: pytest.UsageError | None = None
        self.used: list[str] = []  # properties of the collected audit tests, in registry order
        self._planned: dict[str, list[Cell]] = {}
        self._family: dict[Cell, float] | None = None
        self.cell_rows: dict[str, dict[str, Any]] = {}
        self.displacements: list[dict[str, Any]] = []
        self.cases: list[CaseRecord] = []
        self.engine: Any = None
        self.gate_lines: list[str] = []  # failed requests per model, undecided cells (set at finish)
        self._previous_sigterm: Any = None
        self._froze = False

    # -- setup: only once an audit test is collected (or on an xdist controller)
    @property
    def active(self) -> bool:
        return self._settings is not None

    @property
    def settings(self) -> "Settings":
        if self._settings is None:
            self.setup()
        assert self._settings is not None
        return self._settings

    def setup(self) -> None:
        """Resolve and check settings, data sources, model specs and the baseline (cheap: no model
        loads, no image decodes). A problem is a ``pytest.UsageError`` (exit 4), kept and raised again."""
        if self.usage_error is not None:
            raise self.usage_error
        if self._settings is not None:
            return
        from .config import resolve_settings
        from .data import resolve_source
        from .judges import validate_specs

        config_file = self.cli.get("config")
        values = {k: v for k, v in self.cli.items() if k != "config"}
        try:
            settings = resolve_settings(values, pyproject=self.config.rootpath / "pyproject.toml",
                                        config_file=Path(config_file) if config_file else None)
            datasets: dict[str, str] = {}
            for spec in settings.data:
                for name, modality in resolve_source(spec).dataset_names():
                    datasets.setdefault(name, modality)
            validate_specs(settings.models)  # each spec's form, and one label per model
            if settings.baseline is not None:  # read now: a bad file stops the run before any model loads
                from .report import read_baseline_scores

                self.baseline_scores = read_baseline_scores(settings.baseline)
        except MiqaUsageError as exc:
            self.usage_error = pytest.UsageError(f"miqa: {exc}")
            raise self.usage_error from None
        self.datasets = datasets
        self._settings = settings
        self._catch_sigterm()

    # -- the matrix
    def cells_of(self, prop: str) -> list[Cell]:
        """The planned cells of one property (independent of -k and -n)."""
        if prop not in self._planned:
            self._planned[prop] = self._plan([prop])
        return self._planned[prop]

    def use(self, prop: str) -> list[Cell]:
        """A collected audit test uses ``prop``: its cells join the matrix (and the alpha families)."""
        if prop not in self.used:
            self.used = [p for p in REGISTRY.names() if p in self.used or p == prop]
            self._family = None
        return self.cells_of(prop)

    @property
    def cells(self) -> list[Cell]:
        """The matrix of the collected audit tests, model by model in plan order (all registered
        properties on an xdist controller, which collects nothing)."""
        return self._plan(self.used or list(REGISTRY.names()))

    def _plan(self, properties: list[str]) -> list[Cell]:
        s = self.settings
        return plan_cells(s.models, self.datasets.items(), with_baseline=s.baseline is not None,
                          corruption_sets=s["corruption_sets"], mapping=s["corruption_mapping"], properties=properties)

    def family_size(self, cell: Cell) -> float:
        """The cell's weighted-Bonferroni factor ``alpha / alpha_cell`` within its model's family:
        the cells of every registered property (the built-in ones always, a user's once its test
        or module is imported), whichever tests were collected or selected, so that running one
        file, ``-k`` or ``-n`` never changes a verdict (:mod:`miqa_checks.families`)."""
        if self._family is None:
            from .families import effective_family_sizes

            self._family = effective_family_sizes(self._plan(list(REGISTRY.names())), shares=alpha_shares(),
                                                  deterministic={p.name for p in REGISTRY if p.deterministic})
        return self._family[cell]

    def freeze_heap(self) -> None:
        """Move every object alive now into the garbage collector's permanent generation
        (``gc.freeze``): the engine's tens of thousands of results and the test items are alive
        until the end, and every full collection (and pytest's at unconfigure) traversed them
        again. :meth:`thaw` (a config cleanup registered first, so it runs last) undoes it."""
        gc.freeze()
        self._froze = True

    def thaw(self) -> None:
        if self._froze:
            gc.unfreeze()
            self._froze = False

    def _catch_sigterm(self) -> None:
        """SIGTERM (CI cancellation, ``timeout``) ends an audit run like Ctrl-C: stored batches kept,
        partial reports marked interrupted."""
        if self._previous_sigterm is None and threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    # -- hooks: this object is registered as a plugin, so the hooks see the state as ``self``

    def pytest_unconfigure(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def pytest_collection_modifyitems(self) -> None:
        if self.usage_error is not None:
            raise self.usage_error
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.active and not self.is_worker:
            record_case(self, report)

    @property
    def has_results(self) -> bool:
        """Whether this process has audit results to write (an engine, cell rows, or workers' parts)."""
        return self.active and (self.engine is not None or bool(self.cell_rows) or self.parts_dir.is_dir())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.cell_rows:
            return
        from .judges.spec import label_lines
        from .report import format_terminal_summary

        terminalreporter.section("miqa-checks summary")
        for line in label_lines(self.settings.models):  # e.g. "model sim:pixelation=-13 -> label sim-1a2b3c4d"
            terminalreporter.write_line(line)
        width = max(100, terminalreporter._tw.fullwidth)
        for line in format_terminal_summary(list(self.cell_rows.values()), width=width, notes=self.gate_lines):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"reports written to {self.settings.report_dir}/")

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def parts_dir(self) -> Path:
        return self.settings.report_dir / ".parts" / self.run_id


def _interrupt(signum: int, frame: Any) -> None:
    """The first SIGTERM interrupts like Ctrl-C; later ones are ignored, so that a repeated signal
    (a CI runner, an xdist worker's own shutdown) cannot cut the partial reports short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def record_case(state: MiqaState, report: pytest.TestReport) -> None:
    """Controller side: keep each finished test for junit.xml and each cell row for matrix.csv."""
    if hasattr(report, "miqa_row"):
        state.cell_rows[report.nodeid] = report.miqa_row
        state.displacements += report.miqa_displacements
    failed_outside_call = report.when != "call" and report.outcome == "failed"
    if not (report.when == "call" or failed_outside_call or (report.when == "setup" and report.skipped)):
        return
    in_error = failed_outside_call or (report.failed and getattr(report, "miqa_row", {}).get("verdict") == ERROR)
    outcome = "error" if in_error else report.outcome
    if report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2])
    else:
        message = report.longreprtext.strip().splitlines()[-1] if report.longreprtext.strip() else ""
    state.cases.append(
        CaseRecord(
            nodeid=report.nodeid, outcome=outcome, duration=report.duration, message=message,
            details=report.longreprtext if outcome in ("failed", "error") else "",
            properties=list(report.user_properties),
        )
    )
