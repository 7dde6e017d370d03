"""The pytest plugin: options, parametrisation of the audit suite, and reports.

Loaded through the ``pytest11`` entry point. Importing it imports nothing heavy (no numpy, torch
or transformers): collection of tens of thousands of cells stays fast. The engine, the judges and
the statistics load inside session fixtures, only when an audit test runs.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from .config import Settings, resolve_settings
from .errors import MiqaUsageError
from .families import effective_family_sizes
from .matrix import BASELINE_PROPERTIES, PROPERTIES, Cell, plan_cells

STATE = pytest.StashKey["MiqaState"]()
ROW = pytest.StashKey[dict]()
_OPTIONS = {
    # cli flag: (dest key, argparse kwargs, help)
    "--miqa-model": ("model", {"action": "append", "metavar": "SPEC"}, "model to audit (repeatable): HF id, local folder, tiny-<arch>, openai:<url>#<model>, sim-robust, sim-paper, sim:<knobs>; NAME=SPEC sets its label in test ids"),
    "--miqa-data": ("data", {"action": "append", "metavar": "SPEC"}, "data (repeatable): MediMeta-C root, MedIMeta root, image folder, manifest CSV, or 'samples'"),
    "--miqa-max-images": ("max_images", {"type": int, "metavar": "N"}, "images per dataset (default: the profile's)"),
    "--miqa-config": ("config", {"metavar": "FILE"}, "TOML file with thresholds, profile and options"),
    "--miqa-profile": ("profile", {"metavar": "NAME"}, "default, paper or strict"),
    "--miqa-baseline": ("baseline", {"metavar": "CSV"}, "scores.csv of an earlier run: enables the upgrade-gate tests"),
    "--miqa-report-dir": ("report_dir", {"metavar": "DIR"}, "where reports go (default: reports)"),
    "--miqa-cache": ("cache", {"metavar": "DIR"}, "result store folder (default: .miqa_cache)"),
    "--miqa-no-cache": ("no_cache", {"action": "store_const", "const": True}, "do not reuse stored results"),
    "--miqa-device": ("device", {"metavar": "DEV"}, "auto, cpu, cuda or cuda:N"),
    "--miqa-batch-size": ("batch_size", {"metavar": "N|auto"}, "images per forward pass, or auto"),
    "--miqa-seed": ("seed", {"type": int, "metavar": "N"}, "one seed for every random draw (default 0)"),
    "--miqa-strict": ("strict", {"action": "store_const", "const": True}, "an inconclusive test fails instead of skipping (same as --miqa-inconclusive=fail)"),
    "--miqa-inconclusive": ("inconclusive", {"metavar": "POLICY"}, "what an inconclusive cell does: skip, fail, or fail-above:<share> (the run fails when more than that share of cells is inconclusive); default: the profile's"),
    "--miqa-trust-remote-code": ("trust_remote_code", {"action": "store_const", "const": True}, "allow checkpoints that ship their own model code"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("miqa", "miqa-checks: robustness audit of VLM image-quality judges")
    for flag, (dest, kwargs, help_text) in _OPTIONS.items():
        group.addoption(flag, dest=f"miqa_{dest}", default=None, help=help_text, **kwargs)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    """``--miqa-data /x`` (a space): pytest chose its rootdir and ini with /x as a test path; redo it."""
    from .cli_paths import correct_setup

    correct_setup(early_config, args, [flag for flag, (_, kwargs, _) in _OPTIONS.items() if kwargs.get("action") != "store_const"])


class MiqaState:
    """Per-process state: settings, the planned matrix, and (controller side) collected results."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.run_id = getattr(config, "workerinput", {}).get("miqa_run_id") or uuid.uuid4().hex
        self.started = time.time()
        self._cells: list[Cell] | None = None
        self.cell_rows: dict[str, dict[str, Any]] = {}
        self.displacements: list[dict[str, Any]] = []
        self.cases: list[Any] = []
        self.engine = None
        self.gate_lines: list[str] = []  # failed requests per model, undecided cells (set at finish)
        self._previous_sigterm: Any = None

    @property
    def cells(self) -> list[Cell]:
        """The full matrix (independent of -k and -n)."""
        if self._cells is None:
            from .data import resolve_source

            datasets: dict[str, str] = {}
            for spec in self.settings.data:
                for name, modality in resolve_source(spec).dataset_names():
                    datasets.setdefault(name, modality)
            self._cells = plan_cells(
                self.settings.models, datasets.items(), with_baseline=self.settings.baseline is not None,
                corruption_sets=self.settings["corruption_sets"], mapping=self.settings["corruption_mapping"],
            )
        return self._cells

    @cached_property
    def family_sizes(self) -> dict[Cell, float]:
        """Cells per model in the full matrix: each model's Bonferroni family."""
        return effective_family_sizes(self.cells)

    @cached_property
    def baseline_scores(self) -> dict[tuple[str, str, str, str], float] | None:
        """``--miqa-baseline`` scores by (dataset, image_id, condition, prompt_id); None without one."""
        if self.settings.baseline is None:
            return None
        from .report import read_baseline_scores

        return read_baseline_scores(self.settings.baseline)

    # -- hooks: this object is registered as a plugin, so the hooks see the state as ``self``
    def pytest_sessionstart(self) -> None:
        """SIGTERM (CI cancellation, ``timeout``) ends the run like Ctrl-C: stored batches kept,
        partial reports marked interrupted."""
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def pytest_unconfigure(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.is_worker:
            from .runtime import record_case

            record_case(self, report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from .runtime import finish_session

        gate_failure = finish_session(self, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        if gate_failure and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.cell_rows:
            return
        from .report import format_terminal_summary

        terminalreporter.section("miqa-checks summary")
        from .judges.spec import label_lines

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
    raise KeyboardInterrupt(f"signal {signum}")


def _cli_values(config: pytest.Config) -> dict[str, Any]:
    values = {dest: config.getoption(f"miqa_{dest}") for dest, _, _ in _OPTIONS.values()}
    values.pop("config")
    return values


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped cleanly without one")
    config_file = config.getoption("miqa_config")
    try:
        settings = resolve_settings(
            _cli_values(config),
            pyproject=config.rootpath / "pyproject.toml",
            config_file=Path(config_file) if config_file else None,
        )
        from .data import resolve_source

        for spec in settings.data:
            resolve_source(spec)
        from .judges import validate_specs

        validate_specs(settings.models)  # each spec's form, and one label per model
        state = MiqaState(config, settings)
        state.baseline_scores  # noqa: B018 - read now: a bad baseline file stops the run before any model loads
    except MiqaUsageError as exc:
        raise pytest.UsageError(f"miqa: {exc}") from None
    config.stash[STATE] = state
    config.pluginmanager.register(state, "miqa-state")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand every worker the same run id (they share the result store)."""
    node.workerinput["miqa_run_id"] = node.config.stash[STATE].run_id


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "miqa_cell" not in metafunc.fixturenames:
        return
    prop = metafunc.definition.originalname.removeprefix("test_")
    if prop not in PROPERTIES:
        raise pytest.UsageError(f"miqa: {metafunc.definition.nodeid}: no audit property named {prop!r}; known: {', '.join(PROPERTIES)}")
    state = metafunc.config.stash[STATE]
    cells = [c for c in state.cells if c.property == prop]
    if not cells and prop in BASELINE_PROPERTIES:
        skip = pytest.mark.skip(reason="upgrade-gate test: needs --miqa-baseline <scores.csv of an earlier run>")
        metafunc.parametrize("miqa_cell", [pytest.param(None, marks=skip)], ids=["no-baseline"])
        return
    metafunc.parametrize("miqa_cell", cells, ids=[c.param_id for c in cells])


@pytest.fixture(scope="session")
def miqa_settings(pytestconfig: pytest.Config) -> Settings:
    """The validated settings of this run."""
    return pytestconfig.stash[STATE].settings


@pytest.fixture(scope="session")
def miqa_engine(request: pytest.FixtureRequest):
    """The engine, with every request the selected cells need computed (or read from the store)."""
    state: MiqaState = request.config.stash[STATE]
    from .runtime import build_engine

    selected = [item.callspec.params["miqa_cell"] for item in request.session.items if _cell_of(item) is not None]
    engine = build_engine(state, request.config)
    state.engine = engine
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():
            engine.prepare(selected)
    except MiqaUsageError as exc:  # e.g. a data source with no readable image: stop, say why
        pytest.exit(f"miqa: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    yield engine
    # closed in pytest_sessionfinish, after its results are written


@pytest.fixture
def miqa_check(request: pytest.FixtureRequest, miqa_engine):
    """Call with the cell: evaluates it, records the row and JUnit properties, sets the outcome."""
    from .runtime import check_cell

    state: MiqaState = request.config.stash[STATE]

    def check(cell: Cell) -> None:
        check_cell(request.node, cell, miqa_engine, state, ROW)

    return check


def _cell_of(item: pytest.Item) -> Cell | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("miqa_cell") if callspec is not None else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if call.when == "call" and ROW in item.stash:
        report.miqa_row = item.stash[ROW]["row"]
        report.miqa_displacements = item.stash[ROW]["displacements"]
    return report


