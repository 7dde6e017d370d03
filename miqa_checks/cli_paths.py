"""Make ``--miqa-data /some/folder`` (a space, not ``=``) behave like ``--miqa-data=/some/folder``.

pytest chooses its rootdir and config file (``determine_setup``) from the command line *before*
it loads entry-point plugins, so an option it does not know yet is set aside and its value, an
existing path, is taken for a test path (pytest issues #1435, #8846). The project's
``[tool.pytest.ini_options]`` is then not read (testpaths, junit_family, markers, addopts) and
pytest collects everything under the invocation folder.

:func:`correct_setup` runs in ``pytest_load_initial_conftests`` (before any conftest loads and
before pytest's final parse of the command line): it redoes that choice now that the miqa
options are known and, when it differs, puts the right rootdir and configuration in place. What
pytest applied from the wrong choice that cannot be taken back (its addopts, pythonpath), and a
pytest that keeps these values elsewhere, stop the run instead with a usage error that shows the
``--opt=PATH`` spelling. Imports nothing heavy.
"""

from __future__ import annotations

import copy
import inspect
import sys
from pathlib import Path
from typing import Any, Collection, NoReturn

import pytest

_CONFIG_ATTRS = ("_rootpath", "_inipath", "_inicache", "_parser")


def spaced_values(args: list[str], value_flags: Collection[str], cwd: Path) -> list[tuple[str, str]]:
    """The ``(flag, value)`` pairs of ``value_flags`` written with a space whose value is an
    existing path (relative to ``cwd``): the values pytest may have taken for test paths."""
    pairs = []
    for flag, value in zip(args, args[1:]):
        if flag == "--":
            break
        if flag in value_flags and _exists(cwd / value):
            pairs.append((flag, value))
    return pairs


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def correct_setup(config: pytest.Config, args: list[str], value_flags: Collection[str]) -> None:
    """Redo pytest's rootdir/config-file choice for ``args`` (mutated in place: the list pytest
    parses next) now that ``value_flags`` (options taking a value) are known; raise
    :class:`pytest.UsageError` when that cannot be done."""
    old_addopts = [str(a) for a in config.getini("addopts")]
    known_layout = args[: len(old_addopts)] == old_addopts  # pytest puts ini addopts first
    cmdargs = args[len(old_addopts) :] if known_layout else list(args)
    spaced = spaced_values(cmdargs, value_flags, config.invocation_params.dir)
    if not spaced:
        return
    if not all(hasattr(config, a) for a in _CONFIG_ATTRS) or not _inicfg_attr(config):
        _refuse(spaced, config, "this pytest version keeps its configuration where miqa-checks cannot correct it")
    ns = config._parser.parse_known_args(cmdargs, namespace=copy.copy(config.option))
    rootpath, inipath, inicfg, ignored = _determine_setup(ns, config.invocation_params.dir)
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    if not known_layout:
        _refuse(spaced, config, "pytest put its arguments in an order miqa-checks does not know")
    if old_addopts or config.getini("pythonpath"):
        _refuse(spaced, config, f"pytest already applied the addopts/pythonpath of {config.inipath}")

    config._rootpath, config._inipath = rootpath, inipath
    setattr(config, _inicfg_attr(config), inicfg)
    if hasattr(config, "_ignored_config_files"):
        config._ignored_config_files = ignored
    config._inicache.clear()
    config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))

    addopts = [str(a) for a in config.getini("addopts")]
    if any(_loads_plugin_or_assert_mode(a, b) for a, b in zip(addopts, [*addopts[1:], ""])):
        _refuse(spaced, config, f"the addopts of {inipath} load plugins or set --assert, which pytest does earlier")
    args[:] = addopts + cmdargs
    known = config._parser.parse_known_args(args, namespace=copy.copy(config.option))
    _apply_addopts_overrides(config, known)
    if known.confcutdir is None:
        known.confcutdir = str(inipath.parent if inipath is not None else rootpath)
    config.known_args_namespace = known
    config.pluginmanager.consider_preparse(addopts, exclude_only=True)  # -p no:NAME
    for check in ("_checkversion", "_validate_plugins"):  # minversion, required_plugins
        if hasattr(config, check):
            getattr(config, check)()
    if hasattr(config, "_configure_python_path"):  # pytest >= 9 set sys.path before plugins loaded
        for path in reversed(config.getini("pythonpath")):  # its cleanup reads getini: removes these
            sys.path.insert(0, str(path))
    rewrite_hook = getattr(config.pluginmanager, "rewrite_hook", None)
    if hasattr(rewrite_hook, "fnpats"):
        rewrite_hook.fnpats = config.getini("python_files")


def _inicfg_attr(config: pytest.Config) -> str | None:
    """The instance attribute holding the ini values: ``_inicfg`` (pytest 9) or ``inicfg`` (8)."""
    return next((a for a in ("_inicfg", "inicfg") if a in vars(config)), None)


def _determine_setup(ns: Any, invocation_dir: Path) -> tuple[Path, Path | None, Any, Any]:
    """pytest's own ``determine_setup`` on the parsed namespace: (rootpath, inipath, inicfg, ignored)."""
    from _pytest.config.findpaths import determine_setup

    kwargs = {
        "inifile": ns.inifilename,
        "args": ns.file_or_dir,
        "rootdir_cmd_arg": ns.rootdir or None,
        "invocation_dir": invocation_dir,
        "override_ini": ns.override_ini,
    }
    accepted = inspect.signature(determine_setup).parameters
    result = determine_setup(**{k: v for k, v in kwargs.items() if k in accepted})
    return result[0], result[1], result[2], (result[3] if len(result) > 3 else [])


def _apply_addopts_overrides(config: pytest.Config, known: Any) -> None:
    """pytest >= 9 merges ``-o`` given in addopts into the ini values after reading them."""
    try:
        from _pytest.config.findpaths import parse_override_ini
    except ImportError:  # pytest 8 reads -o when a value is asked for
        return
    if overrides := parse_override_ini(known.override_ini):
        getattr(config, _inicfg_attr(config)).update(overrides)
        config._inicache.clear()


def _loads_plugin_or_assert_mode(arg: str, following: str) -> bool:
    if arg == "-p":
        return not following.strip().startswith("no:")
    if arg.startswith("-p"):
        return not arg[2:].strip().startswith("no:")
    return arg == "--assert" or arg.startswith("--assert=")


def _refuse(spaced: list[tuple[str, str]], config: pytest.Config, why: str) -> NoReturn:
    written = " ".join(f"{flag} {value}" for flag, value in spaced)
    fixed = " ".join(f"{flag}={value}" for flag, value in spaced)
    raise pytest.UsageError(
        f"miqa: pytest took the value in '{written}' for a test path while it chose its rootdir "
        f"({config.rootpath}) and config file, before miqa-checks was loaded, and {why}. "
        f"Write it with '=': {fixed}"
    )
