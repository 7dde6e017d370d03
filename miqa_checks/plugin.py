"""The pytest plugin: options, parametrisation of ``@audit`` tests, fixtures, report hooks.

Loaded through the ``pytest11`` entry point. Importing it imports nothing heavy (no numpy, torch
or transformers), and a run without an audit test does nothing beyond registering the options:
settings, data sources and model specs are resolved when the first audit test is collected
(:mod:`miqa_checks.session`); the engine, the judges and the statistics load inside fixtures,
only when an audit test runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from .errors import MiqaUsageError
from .properties import Cell
from .session import STATE, MiqaState

ROW = pytest.StashKey[dict]()
CHECK = pytest.StashKey[Any]()
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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the run state; resolve nothing yet (see :mod:`miqa_checks.session`)."""
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped cleanly without one")
    state = MiqaState(config, {dest: config.getoption(f"miqa_{dest}") for dest, _, _ in _OPTIONS.values()})
    config.stash[STATE] = state
    config.pluginmanager.register(state, "miqa-state")
    config.add_cleanup(state.thaw)  # registered before the other plugins' cleanups: runs after them
    if _is_xdist_controller(config):
        state.setup()  # the controller collects nothing: check the options before the workers start


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") not in ("no", None)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand every worker the same run id (they share the result store)."""
    node.workerinput["miqa_run_id"] = node.config.stash[STATE].run_id


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per cell of an ``@audit`` test's property (its planned cells, the same in every process)."""
    prop = getattr(metafunc.function, "miqa_property", None)
    if prop is None:
        return
    if "miqa" not in metafunc.fixturenames:
        raise pytest.UsageError(f"miqa: {metafunc.definition.nodeid}: an @audit test takes the 'miqa' fixture (the cell's data)")
    state: MiqaState = metafunc.config.stash[STATE]
    try:
        cells = state.use(prop.name)
    except pytest.UsageError:  # raised again after collection (exit 4), not as a collection error
        metafunc.parametrize("miqa_cell", [pytest.param(None, marks=pytest.mark.skip(reason="usage error"))], ids=["usage-error"])
        return
    if not cells and prop.needs_baseline and state.settings.baseline is None:
        skip = pytest.mark.skip(reason="upgrade-gate test: needs --miqa-baseline <scores.csv of an earlier run>")
        metafunc.parametrize("miqa_cell", [pytest.param(None, marks=skip)], ids=["no-baseline"])
        return
    metafunc.parametrize("miqa_cell", cells, ids=[c.param_id for c in cells])


@pytest.fixture
def miqa_cell() -> Cell:
    """The cell of an ``@audit`` test (parametrised by the plugin)."""
    raise pytest.UsageError("miqa: the miqa fixtures need an @audit test (see docs/EXTENDING.md)")


@pytest.fixture(scope="session")
def miqa_settings(pytestconfig: pytest.Config):
    """The validated settings of this run."""
    return pytestconfig.stash[STATE].settings


#: The test item being set up (items run one at a time in a process): the miqa fixtures read it
#: instead of taking pytest's ``request`` fixture, for which pytest builds a fixture definition
#: (inspecting a signature) on every use, and every item uses a fixture's arguments again: a tenth
#: of a warm run's wall over its 2 000 items.
_ITEM: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _ITEM[:] = [item]


@pytest.fixture(scope="session")
def miqa_engine():
    """The engine, with every request the selected cells need computed (or read from the store)."""
    session = _ITEM[0].session  # not ``request``: pytest asks a fixture's arguments again for every item
    state: MiqaState = session.config.stash[STATE]
    from .runtime import build_engine

    selected = [item.callspec.params["miqa_cell"] for item in session.items if _cell_of(item) is not None]
    engine = build_engine(state)
    state.engine = engine
    capture = session.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled():
            engine.prepare(selected)
    except MiqaUsageError as exc:  # e.g. a data source with no readable image: stop, say why
        pytest.exit(f"miqa: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    state.freeze_heap()  # the items and the results live to the end: no full collection walks them again
    yield engine
    # closed in pytest_sessionfinish, after its results are written


@pytest.fixture
def miqa(miqa_cell: Cell, miqa_engine):
    """The cell's data and assertion helpers (:class:`~miqa_checks.properties.check.CellCheck`):
    ``scores(request)``, ``tolerance``, ``assert_change_within(cond, ref, pct=...)``, ... The one
    ``assert_*`` call records the matrix row, the JUnit properties and the outcome."""
    from .runtime import cell_check

    node = _ITEM[0]
    state: MiqaState = node.config.stash[STATE]
    check = cell_check(node, miqa_cell, miqa_engine, state, ROW,
                       override=getattr(getattr(node, "function", None), "miqa_tolerance", None))
    node.stash[CHECK] = check
    return check


@pytest.fixture
def miqa_judge(miqa):
    """The judge of the cell's model (loaded once per process)."""
    return miqa.judge()


@pytest.fixture
def miqa_images(miqa):
    """The cell's images (:class:`~miqa_checks.records.ImageRecord`, in the order of its scores)."""
    return miqa.images()


def _cell_of(item: pytest.Item) -> Cell | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("miqa_cell") if callspec is not None else None


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """An audit test that returns without deciding its cell is an error (it asserted nothing)."""
    result = yield
    check = pyfuncitem.stash.get(CHECK, None)
    if check is not None and check.outcome is None:
        from .runtime import undecided

        undecided(check)
    return result


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every process writes its part; the controller merges them and writes the reports."""
    state: MiqaState = session.config.stash[STATE]
    if not state.has_results:
        return  # not an audit run: nothing to write, nothing heavy to import
    from .runtime import finish_session

    gate_failure = finish_session(state, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    state.freeze_heap()  # what the test loop kept (reports, rows) is alive to the end too
    if gate_failure and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if call.when == "call" and ROW in item.stash:
        report.miqa_row = item.stash[ROW]["row"]
        report.miqa_displacements = item.stash[ROW]["displacements"]
    return report
