"""Settings: built-in profile < ``[tool.miqa]`` in pyproject.toml < ``--miqa-config`` TOML < command line.

Every key is validated; an unknown key or a bad value is a ``MiqaUsageError`` that names the key,
where it came from, and what it accepts. Nothing here imports numpy or torch.
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import MiqaUsageError
from .profiles import PROFILES

from .conditions import ids as corruption_ids  # the one list of corruption ids: the registry


def _number(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"expected a value in [{lo}, {hi}], got {value!r}")
        return int(value) if integer else float(value)

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _per_severity(value: Any) -> list[float]:
    if not isinstance(value, list) or len(value) != 5:
        raise ValueError(f"expected a list of 5 numbers (severities 1..5), got {value!r}")
    return [_number(0)(v) for v in value]


def _per_corruption(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of corruption -> percent, got {value!r}")
    unknown = sorted(set(value) - set(corruption_ids()))
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(corruption_ids())}")
    return {k: _number(0, 100)(v) for k, v in value.items()}


def _corruption_sets(value: Any) -> list[str]:
    from .conditions import REGISTRY

    names = _text_list(value)
    unknown = sorted(set(names) - set(REGISTRY.sets()))
    if unknown:
        raise ValueError(f"unknown corruption set(s) {', '.join(unknown)}; known: {', '.join(REGISTRY.sets())}")
    return names


def _corruption_mapping(value: Any) -> dict[str, list[str]]:
    """Modality (canonical key, e.g. ``ultrasound``, or the dataset's modality text) -> corruption ids."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of modality -> list of corruption ids, got {value!r}")
    out = {}
    for modality, names in value.items():
        names = _text_list(names)
        unknown = sorted(set(names) - set(corruption_ids()))
        if unknown:
            raise ValueError(f"{modality}: unknown corruption(s) {', '.join(unknown)}; known: {', '.join(corruption_ids())}")
        out[modality] = names
    return out


def _text_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a non-empty string or list of strings, got {value!r}")
    return list(value)


def _batch_size(value: Any) -> int | None:
    if value in ("auto", None):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected 'auto' or a positive integer, got {value!r}")
    return value


def _device(value: Any) -> str:
    ok = value in ("auto", "cpu", "cuda") or (
        isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit()
    )
    if not ok:
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def _inconclusive_policy(value: Any) -> str:
    """``skip``, ``fail``, or ``fail-above:<share>`` (share of inconclusive cells, 0..1)."""
    if value in ("skip", "fail"):
        return value
    if isinstance(value, str) and value.startswith("fail-above:"):
        _number(0, 1)(_float_text(value.partition(":")[2]))
        return value
    raise ValueError(f"expected skip, fail or fail-above:<share 0..1>, got {value!r}")


def _float_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _max_images(value: Any) -> int | None:
    return None if value is None else _number(1, 10**7, integer=True)(value)


#: Profile keys: thresholds and scoring set-up. Values validated by these checks.
PROFILE_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "max_images": _max_images,
    "scoring": _choice("expected", "generate"),
    "max_new_tokens": _number(1, 4096, integer=True),
    "system_prompt": _text,
    "corruption_params": _choice("imagenet_c", "medmnist_c"),
    "corruption_source": _choice("on_the_fly", "precorrupted"),
    "alpha": _number(1e-6, 0.5),
    "bootstrap_resamples": _number(100, 100000, integer=True),
    "min_images": _number(2, 10**6, integer=True),
    "max_lost_share": _number(0, 1),
    "unit": _choice("group", "image"),
    "inconclusive": _inconclusive_policy,
    "stability_tolerance_pct": _per_severity,
    "trend_tolerance_pct": _number(0, 100),
    "fall_required_pct": _per_corruption,
    "corruption_sets": _corruption_sets,
    "corruption_mapping": _corruption_mapping,
    "inflation_tolerance_pct": _number(0, 1000),
    "metadata_tolerance_pct": _number(0, 1000),
    "paraphrase_tolerance_pct": _number(0, 1000),
    "repeatability_tolerance": _number(0, 4),
    "max_parse_failure_rate": _number(0, 1),
    "max_out_of_range_rate": _number(0, 1),
    "embedding_tolerance": _number(0, 100),
    "baseline_min_correlation": _number(-1, 1),
    "baseline_margin_pct": _number(0, 1000),
}

#: Run options (also command-line options ``--miqa-<key with dashes>``).
OPTION_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "model": _text_list,
    "data": _text_list,
    "profile": _choice(*PROFILES),
    "baseline": _text,
    "report_dir": _text,
    "cache": _text,
    "no_cache": _flag,
    "device": _device,
    "batch_size": _batch_size,
    "seed": _number(0, 2**32 - 1, integer=True),
    "strict": _flag,
    "trust_remote_code": _flag,
}

OPTION_DEFAULTS: dict[str, Any] = {
    "model": ["tiny-llava", "sim-paper"],
    "data": ["samples"],
    "profile": "default",
    "baseline": None,
    "report_dir": "reports",
    "cache": ".miqa_cache",
    "no_cache": False,
    "device": "auto",
    "batch_size": None,
    "seed": 0,
    "strict": False,
    "trust_remote_code": False,
}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, validated. ``thresholds`` holds the profile keys."""

    models: tuple[str, ...]
    data: tuple[str, ...]
    profile: str
    thresholds: dict[str, Any] = field(hash=False)
    baseline: Path | None
    report_dir: Path
    cache_dir: Path | None
    device: str
    batch_size: int | None
    seed: int
    strict: bool
    trust_remote_code: bool
    sources: dict[str, str] = field(hash=False, default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.thresholds[key]


#: Largest settings file read, in bytes (a settings file is a few KB; pyproject.toml rarely 100 KB).
MAX_SETTINGS_BYTES = 2**20


def _read_settings_text(path: Path, label: str) -> str:
    """The text of a regular file of at most MAX_SETTINGS_BYTES; a usage error for anything else
    (a folder, device such as /dev/zero, FIFO or socket is refused before it is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without waiting
    except FileNotFoundError:
        raise MiqaUsageError(f"{label}: file not found: {path}") from None
    except (OSError, ValueError) as exc:  # no permission, a NUL in the name, ...
        raise MiqaUsageError(f"{label}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MiqaUsageError(f"{label}: cannot read {path}: not a regular file (a folder, device or pipe); give a TOML file")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
        except OSError as exc:
            raise MiqaUsageError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise MiqaUsageError(f"{label}: {path} is larger than {MAX_SETTINGS_BYTES} bytes; a settings file is a few KB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MiqaUsageError(f"{path.name}: not valid TOML: not UTF-8 text ({exc})") from None


def read_toml_table(path: Path, table: tuple[str, ...] = (), *, label: str = "--miqa-config") -> dict[str, Any]:
    """The table at ``table`` (e.g. ``("tool", "miqa")``) of a TOML file, {} when absent.

    ``label`` names the file's role in messages. Nesting too deep for the parser is a usage error.
    """
    text = _read_settings_text(path, label)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MiqaUsageError(f"{path.name}: not valid TOML: {exc}") from None
    except RecursionError:
        raise MiqaUsageError(f"{path.name}: not valid TOML for miqa: arrays or tables nested too deep") from None
    for name in table:
        data = data.get(name, {})
        if not isinstance(data, dict):
            raise MiqaUsageError(f"{path.name}: [{'.'.join(table)}] must be a table")
    return data


def _check_folder(option: str, value: str, *, must_write: bool) -> Path:
    """``value`` as a folder path: a usage error when it, or the nearest existing folder above it,
    is a file, or (``must_write``) when the folder cannot be written (or created)."""
    if "\x00" in value:
        raise MiqaUsageError(f"{option}: {value!r} is not a usable folder path (it holds a NUL character)")
    path = Path(value)
    try:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            what = "is a file" if probe == path else f"cannot be created: {probe} is a file"
            raise MiqaUsageError(f"{option}: {path} {what}; give a folder")
        if must_write and probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
            what = "cannot be written" if probe == path else f"cannot be created: {probe} cannot be written"
            raise MiqaUsageError(f"{option}: {path} {what}; give a writable folder")
    except (OSError, ValueError) as exc:
        raise MiqaUsageError(f"{option}: {value!r} is not a usable folder path ({exc})") from None
    return path


def _validate(layer: dict[str, Any], origin: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in layer.items():
        check = PROFILE_SCHEMA.get(key) or OPTION_SCHEMA.get(key)
        if check is None:
            known = ", ".join(sorted([*PROFILE_SCHEMA, *OPTION_SCHEMA]))
            raise MiqaUsageError(f"{origin}: unknown key {key!r}; known keys: {known}")
        try:
            out[key] = check(value)
        except ValueError as exc:
            raise MiqaUsageError(f"{origin}: {key}: {exc}") from None
    return out


def resolve_settings(
    cli: dict[str, Any], *, pyproject: Path | None = None, config_file: Path | None = None
) -> Settings:
    """Merge the layers (later wins) and validate each; ``cli`` holds only options the user gave."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if pyproject is not None and pyproject.is_file():
        layers.append(("pyproject.toml [tool.miqa]", _validate(read_toml_table(pyproject, ("tool", "miqa"), label="pyproject.toml"), "pyproject.toml [tool.miqa]")))
    if config_file is not None:
        layer = read_toml_table(config_file)
        if "tool" in layer:
            tool = layer["tool"]
            if not isinstance(tool, dict) or not isinstance(tool.get("miqa", {}), dict):
                raise MiqaUsageError(f"{config_file.name}: [tool] and [tool.miqa] must be tables")
            layer = tool.get("miqa", layer)
        layers.append((f"--miqa-config {config_file.name}", _validate(layer, config_file.name)))
    layers.append(("command line", _validate({k: v for k, v in cli.items() if v is not None}, "command line")))

    merged: dict[str, Any] = dict(OPTION_DEFAULTS)
    sources: dict[str, str] = {}
    for origin, layer in layers:
        merged.update(layer)
        sources.update({k: origin for k in layer})
    profile = merged["profile"]
    thresholds = dict(PROFILES[profile])
    thresholds.update({k: v for k, v in merged.items() if k in PROFILE_SCHEMA})
    if merged["strict"]:
        thresholds["inconclusive"] = "fail"
    baseline = Path(merged["baseline"]) if merged["baseline"] else None
    if baseline is not None and not baseline.is_file():
        raise MiqaUsageError(f"--miqa-baseline: file not found: {baseline} (give the scores.csv of an earlier run)")
    return Settings(
        models=tuple(dict.fromkeys(merged["model"])),
        data=tuple(dict.fromkeys(merged["data"])),
        profile=profile,
        thresholds=thresholds,
        baseline=baseline,
        report_dir=_check_folder("--miqa-report-dir (report_dir)", merged["report_dir"], must_write=True),
        cache_dir=None if merged["no_cache"] else _check_folder("--miqa-cache (cache)", merged["cache"], must_write=False),
        device=merged["device"],
        batch_size=merged["batch_size"],
        seed=merged["seed"],
        strict=merged["strict"],
        trust_remote_code=merged["trust_remote_code"],
        sources=sources,
    )
