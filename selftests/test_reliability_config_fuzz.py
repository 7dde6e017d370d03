"""Hypothesis fuzzing of the settings parser (miqa_checks/config.py ``resolve_settings`` + TOML).

The contract: for any TOML file, pyproject table or command-line values, ``resolve_settings``
returns validated ``Settings`` or raises ``MiqaUsageError`` naming the offending key (or the file);
nothing else escapes, and no accepted number is NaN or infinite.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miqa_checks.config import OPTION_SCHEMA, PROFILE_SCHEMA, Settings, resolve_settings
from miqa_checks.errors import MiqaUsageError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
WORKDIR = Path(tempfile.mkdtemp(prefix="miqa-config-fuzz-"))
_names = itertools.count()
KEYS = sorted([*PROFILE_SCHEMA, *OPTION_SCHEMA])
NON_TOML_KEYS = ("baseline",)  # would need an existing file; tested apart

scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.05, 3]),
    st.text(max_size=20), st.sampled_from(["auto", "cpu", "cuda:0", "expected", "generate", "paper", "strict", "5"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.sampled_from(["brightness", "pixelation", "x", "miqa"]), inner, max_size=3)),
    max_leaves=8)
keys = st.one_of(st.sampled_from([k for k in KEYS if k not in NON_TOML_KEYS] + ["tool"]), st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def _write(text: str | bytes) -> Path:
    path = WORKDIR / f"c{next(_names)}.toml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _assert_contract(call, named: set[str]) -> None:
    try:
        result = call()
    except MiqaUsageError as exc:
        message = str(exc)
        assert message and (any(k in message for k in named) or "toml" in message.lower() or "table" in message), message
        return
    assert isinstance(result, Settings)
    for key, value in result.thresholds.items():
        for v in value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value]:
            assert not (isinstance(v, float) and not math.isfinite(v)), (key, value)


@FUZZ
@given(st.dictionaries(keys, values, max_size=5), st.booleans())
def test_config_file(table, under_tool):
    body = "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items())
    text = ("[tool.miqa]\n" + body) if under_tool else body
    path = _write(text + "\n")
    _assert_contract(lambda: resolve_settings({}, config_file=path), set(table) | {path.name})


@FUZZ
@given(st.dictionaries(keys, values, max_size=4))
def test_pyproject_table(table):
    body = "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items())
    folder = WORKDIR / f"p{next(_names)}"
    folder.mkdir()
    (folder / "pyproject.toml").write_text("[tool.miqa]\n" + body + "\n")
    _assert_contract(lambda: resolve_settings({}, pyproject=folder / "pyproject.toml"), set(table) | {"pyproject"})


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_bytes_as_config(data):
    path = _write(data)
    _assert_contract(lambda: resolve_settings({}, config_file=path), {path.name})


@FUZZ
@given(st.dictionaries(st.sampled_from([k for k in KEYS if k not in NON_TOML_KEYS]), values, max_size=4))
def test_command_line_values(cli):
    _assert_contract(lambda: resolve_settings(cli), set(cli))


@pytest.mark.parametrize("text, named", [
    ("tool = 3\n", "tool"), ("[tool]\nmiqa = 3\n", "tool"), ("alpha = nan\n", "alpha"),
    ("stability_tolerance_pct = [inf, 1, 2, 3, 4]\n", "stability_tolerance_pct"), ("max_images = -1\n", "max_images"),
    ("seed = 1.5\n", "seed"), ("device = \"gpu\"\n", "device"), ("batch_size = 0\n", "batch_size"),
    ("[tool.miqa]\nalpha = \"0.05\"\n", "alpha"), ("fall_required_pct = {blur = 5}\n", "blur"),
])
def test_known_bad_values_name_the_key(text, named):
    with pytest.raises(MiqaUsageError, match=named):
        resolve_settings({}, config_file=_write(text))


def test_config_path_that_is_a_folder_is_a_usage_error(tmp_path):
    with pytest.raises(MiqaUsageError, match="cannot read"):
        resolve_settings({}, config_file=tmp_path)


@FUZZ
@given(st.sampled_from(KEYS + ["tool"]), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), values),
       st.sampled_from(["file", "tool", "cli"]))
def test_one_key_at_a_time(key, value, where):
    """One key per example, so a bad value is never masked by another key's earlier rejection."""
    if key in NON_TOML_KEYS:
        return
    if where == "cli":
        _assert_contract(lambda: resolve_settings({key: value}), {key})
        return
    path = _write(("[tool.miqa]\n" if where == "tool" else "") + f"{json.dumps(key)} = {_toml_value(value)}\n")
    _assert_contract(lambda: resolve_settings({}, config_file=path), {key, path.name})


@pytest.mark.parametrize("toml, named", [
    ("alpha = nan\n", "alpha"), ("tool = 3\n", "tool"), ("[tool.miqa]\nstability_tolerance_pct = [1, 2]\n", "stability_tolerance_pct"),
    ("max_images = 1e3\n", "max_images"),
])
def test_bad_config_stops_the_audit_before_any_model_loads(tmp_path, toml, named):
    from audit_runner import run_audit

    config = tmp_path / "miqa.toml"
    config.write_text(toml)
    run = run_audit(tmp_path, "--miqa-config", str(config), "--miqa-model", "tiny-llava")
    assert run.returncode == 4, run.output[-2000:]  # pytest usage error
    assert named in run.output and ("expected" in run.output or "table" in run.output)
    assert not (tmp_path / "cache").exists()  # nothing loaded, nothing stored
