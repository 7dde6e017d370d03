"""The property API: one object per property, tests that state their rule, a light plugin.

- every test in tests/ declares the cells and requests of its registered property and states the
  same rule (its body) as the library's declaration;
- a declaration that contradicts a registered property is refused, a re-import is not;
- a project with the plugin installed and no audit test imports nothing heavy and writes nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from miqa_checks import CLEAN, CONDITION, audit, each, each_corruption
from miqa_checks.properties import REGISTRY, Tolerance
from miqa_checks.properties.base import Cell, PlanContext

REPO = Path(__file__).resolve().parents[1]
SUITE = sorted((REPO / "tests").glob("test_*.py"))


def _suite_tests():
    for path in SUITE:
        spec = importlib.util.spec_from_file_location(f"suite_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, fn in vars(module).items():
            if name.startswith("test_") and callable(fn):
                yield name, fn


def _body(fn) -> str:
    """The function's statements without its docstring, as an AST dump."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return "\n".join(ast.dump(stmt) for stmt in body)


def test_every_suite_test_states_its_registered_property_rule() -> None:
    seen = set()
    for name, fn in _suite_tests():
        prop = fn.miqa_property
        assert prop is REGISTRY[name.removeprefix("test_")], name
        assert _body(fn) == _body(prop.rule), f"{name} states another rule than {prop.rule.__module__}"
        seen.add(prop.name)
    builtin = {p.name for p in REGISTRY if p.rule.__module__.startswith("miqa_checks.properties.")}
    assert seen == builtin and len(builtin) == 11


def test_every_builtin_tolerance_says_why() -> None:
    for prop in REGISTRY:
        tolerances = [prop.tolerance] if isinstance(prop.tolerance, Tolerance) else list(prop.tolerance.values())
        assert all(t.key and len(t.why) > 20 for t in tolerances), prop.name


def test_a_contradicting_declaration_is_refused_a_reimport_is_not() -> None:
    with pytest.raises(TypeError, match="rename the test"):
        @audit(cells=each_corruption(severity=False), requests=[CLEAN, CONDITION], tolerance=1.0)
        def test_corruption_stability(miqa):  # noqa: F811 - the built-in name, other cells
            ...

    def make():
        @audit(cells=each(variant=["a", "b"]), requests=[CLEAN], tolerance=2.0, why="test")
        def test_api_selftest_property(miqa):
            miqa.assert_change_within(miqa.clean, miqa.clean, pct=miqa.tolerance)
        return test_api_selftest_property

    try:
        first, again = make(), make()  # the same function defined twice (a module imported again)
        assert first.miqa_property.name == again.miqa_property.name == "api_selftest_property"
        context = PlanContext("sim-robust", "d", "CT", with_baseline=False)
        cells = REGISTRY["api_selftest_property"].plan(context)
        assert [c.variant for c in cells] == ["a", "b"]
        assert REGISTRY["api_selftest_property"].tolerance_for({}, cells[0]) == 2.0
    finally:
        REGISTRY._entries.pop("api_selftest_property", None)


def test_tolerance_values_per_severity_and_per_corruption() -> None:
    cell = Cell("corruption_stability", "m", "d", "CT", corruption="contrast", severity=3)
    thresholds = {"stability_tolerance_pct": [1.0, 2.0, 3.0, 4.0, 5.0]}
    assert REGISTRY["corruption_stability"].tolerance_for(thresholds, cell) == 3.0
    series = Cell("severity_response", "m", "d", "CT", corruption="brightness")
    both = REGISTRY["severity_response"].tolerance_for(
        {"trend_tolerance_pct": 1.0, "fall_required_pct": {"contrast": 5.0}}, series)
    assert both == {"trend_pct": 1.0, "fall_pct": None}  # brightness has no floor
    assert REGISTRY["corruption_stability"].tolerance_for(thresholds, cell, Tolerance(12.0)) == 12.0


UNRELATED = {
    "test_one.py": "def test_one():\n    assert True\n",
    "conftest.py": textwrap.dedent("""
        import sys

        def pytest_unconfigure(config):
            heavy = ("numpy", "scipy", "torch", "PIL", "miqa_checks.runtime", "miqa_checks.data", "miqa_checks.config")
            print("HEAVY:", sorted(m for m in heavy if m in sys.modules))
            print("PLUGIN:", any(getattr(p, "__name__", "") == "miqa_checks.plugin" for p in config.pluginmanager.get_plugins()))
    """),
}


def test_a_project_without_audit_tests_pays_nothing(tmp_path: Path) -> None:
    """Plugin installed, one plain test: no settings, data or runtime work, nothing heavy imported,
    no report written (issue 10.6)."""
    for name, text in UNRELATED.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PLUGIN: True" in done.stdout  # the installed plugin was loaded
    assert "HEAVY: []" in done.stdout, done.stdout[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == sorted(UNRELATED)


def test_plugin_import_is_light() -> None:
    code = ("import sys, miqa_checks.plugin, miqa_checks\n"
            "print(sorted(m for m in ('numpy', 'scipy', 'torch', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
