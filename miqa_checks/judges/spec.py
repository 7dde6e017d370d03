"""The one parser of ``--miqa-model`` strings: text -> :class:`ModelSpec` (kind, target, label).

Forms (each may be prefixed ``NAME=`` to choose the label, e.g. ``candidate=org/model``):

=================================  ========  ==============================================
``tiny-<arch>``                    tiny      offline tiny checkpoint (label: the spec)
``openai:<base_url>#<model>``      openai    OpenAI-compatible server; the URL ends at the
                                             FIRST ``#`` (label ``openai-<model>``)
``sim-robust`` / ``sim-paper``     sim       simulated presets (label: the spec)
``sim:<knobs>``, ``sim-x:<knobs>`` sim       simulated with knobs (label ``sim-<hash8>``)
a local folder                     folder    label: the folder's name
anything else                      hub       Hugging Face id (label ``org_name``)
=================================  ========  ==============================================

``NAME=SPEC`` is read as a name only when NAME is a bare name (``[A-Za-z][A-Za-z0-9_.-]*``, so
never ``sim:pixelation`` or a path) and SPEC parses on its own, and the whole text is not an
existing folder. Labels go into test ids, so a generated label never contains a corruption,
attribute, paraphrase or property id (``-k pixelation`` must not select every cell of a model):
such a label becomes ``<kind>-<hash8>``. Labels never hold credentials. Pure Python, no heavy
imports; :func:`validate_specs` also checks that labels are unique within a run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from ..errors import MiqaUsageError
from ..safe_io import printable, scrub

KINDS = ("tiny", "openai", "sim", "folder", "hub")
OPENAI_FORM = "openai:<base_url>#<model>, e.g. openai:http://127.0.0.1:8000/v1#tiny"
SIM_PRESETS = ("sim-robust", "sim-paper")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class ModelSpec:
    """One parsed ``--miqa-model`` value.

    text: as given (may hold credentials: never print it; use ``safe``).
    kind: one of :data:`KINDS`. target: the spec without ``NAME=`` (what the judge loads).
    name: the user's NAME or None. label: short id for test ids and reports.
    base_url / model / display_url: openai only (base_url may hold credentials; display_url is
    ``host:port/path`` without them).
    """

    text: str
    kind: str
    target: str
    name: str | None
    label: str
    base_url: str = ""
    model: str = ""
    display_url: str = ""

    @property
    def safe(self) -> str:
        """The spec with credentials redacted and control characters escaped, fit for any output."""
        if self.kind == "openai":
            prefix = f"{self.name}=" if self.name else ""
            scheme = urlsplit(self.base_url).scheme
            return printable(scrub(f"{prefix}openai:{scheme}://{self.display_url}#{self.model}"))
        return printable(scrub(self.text))

    @property
    def safe_spec(self) -> str:
        """``safe`` without ``NAME=`` (the judge's own spec)."""
        return self.safe.split("=", 1)[1] if self.name else self.safe


def reserved_ids() -> tuple[str, ...]:
    """Lower-case ids that ``-k`` users select by: corruptions, attributes, paraphrases, properties."""
    from ..conditions import ids  # every registered corruption id, user ones included
    from ..matrix import PROPERTIES
    from ..prompts import ATTRIBUTE_PAIRS, ATTRIBUTES, PARAPHRASES

    return tuple(s.lower() for s in (*ids(), *ATTRIBUTES, *ATTRIBUTE_PAIRS, *PARAPHRASES, *PROPERTIES))


def _holds_reserved(label: str) -> str | None:
    low = label.lower()
    return next((r for r in reserved_ids() if r in low), None)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _clean_label(body: str, kind: str, hash_of: str) -> str:
    """Sanitised label; ``<kind>-<hash8>`` when it would hold a reserved id or nothing at all."""
    label = _UNSAFE.sub("_", body).strip("_")
    if not label or _holds_reserved(label):
        return f"{kind}-{_short_hash(hash_of)}"
    return label


def _usage(text: str, message: str) -> MiqaUsageError:
    return MiqaUsageError(f"--miqa-model {printable(scrub(text))!r}: {message}")


def _parse_openai(text: str, target: str) -> tuple[str, str, str]:
    """``openai:<url>#<model>`` -> (base_url, model, display_url); the URL ends at the first ``#``."""
    base_url, sep, model = target[len("openai:"):].partition("#")
    base_url, model = base_url.strip().rstrip("/"), model.strip()
    if not sep or not model:
        raise _usage(text, f"names no model after '#'; expected {OPENAI_FORM}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _usage(text, f"has no http(s) base URL with a host; expected {OPENAI_FORM}")
    if parts.query or parts.fragment:
        raise _usage(text, f"the base URL must not carry a query (put keys in MIQA_OPENAI_API_KEY); expected {OPENAI_FORM}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _usage(text, f"has an invalid port; expected {OPENAI_FORM}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return base_url, model, f"{host}:{port}{parts.path}"


def _kind_of(target: str) -> str:
    if target.startswith("openai:"):
        return "openai"
    if target.startswith(("sim:", "sim-")):
        return "sim"
    if Path(target).expanduser().is_dir():
        return "folder"
    if target.startswith("tiny-"):
        return "tiny"
    if target.startswith(("/", ".", "~")) or target.count("/") > 1 or "\\" in target:
        return "folder"
    return "hub"


def _parse_target(text: str, target: str) -> ModelSpec:
    """The spec ``target`` (``text`` without ``NAME=``), labelled by its kind's rule."""
    if not target.strip():
        raise _usage(text, "is empty")
    if _CONTROL.search(target):
        raise _usage(text, "contains control characters")
    kind = _kind_of(target)
    base_url = model = display = ""
    if kind == "openai":
        base_url, model, display = _parse_openai(text, target)
        body, hash_of = f"openai-{model}", f"{display}#{model}"
    elif kind == "sim":
        head, colon, _ = target.partition(":")
        if not colon and head not in SIM_PRESETS:
            raise _usage(text, f"unknown simulated judge; use {' or '.join(SIM_PRESETS)} or sim:<knob>=<value>,...")
        body, hash_of = (target, target) if not colon else ("", target)
    elif kind == "folder":
        parts = [p for p in target.replace("\\", "/").split("/") if p not in ("", ".", "..", "~")]
        body, hash_of = (parts[-1] if parts else ""), (parts[-1] if parts else target)
    elif kind == "hub":
        if not _HUB_ID.fullmatch(target):
            raise _usage(text, "is neither a local folder, a Hugging Face id (org/name), tiny-<arch>, "
                               f"sim-robust, sim-paper, sim:<knobs> nor {OPENAI_FORM}")
        body, hash_of = target.replace("/", "_"), target
    else:  # tiny
        body, hash_of = target, target
    return ModelSpec(text, kind, target, None, _clean_label(body, kind, hash_of), base_url, model, display)


@lru_cache(maxsize=256)
def parse_model_spec(text: str) -> ModelSpec:
    """Parse one ``--miqa-model`` value (cheap, no I/O beyond a folder check); MiqaUsageError if malformed."""
    if not isinstance(text, str):
        raise MiqaUsageError(f"--miqa-model must be text, got {type(text).__name__}")
    head, eq, rest = text.partition("=")
    if eq and _NAME.fullmatch(head) and not Path(text).expanduser().is_dir():
        try:
            inner = _parse_target(text, rest)
        except MiqaUsageError:
            if rest.startswith(("openai:", "sim:", "sim-", "tiny-")):
                raise
            inner = None
        if inner is not None:
            if (word := _holds_reserved(head)) is not None:
                raise _usage(text, f"the name {head!r} contains the test id {word!r}, so `-k {word}` would select "
                                   "all of its cells; choose another name")
            return ModelSpec(text, inner.kind, rest, head, head, inner.base_url, inner.model, inner.display_url)
    return _parse_target(text, text)


def model_label(text: str) -> str:
    """The label of a model spec (see the module docstring)."""
    return parse_model_spec(text).label


def validate_specs(texts: Iterable[str]) -> list[ModelSpec]:
    """Parse every spec, run its kind's deep check, and refuse two specs with one label."""
    from . import validate_spec

    seen: dict[str, ModelSpec] = {}
    out = []
    for text in texts:
        spec = parse_model_spec(text)
        validate_spec(text)
        other = seen.get(spec.label)
        if other is not None:
            raise MiqaUsageError(
                f"--miqa-model {other.safe!r} and {spec.safe!r} would both be labelled {spec.label!r}; "
                f"name them, e.g. --miqa-model 'a={other.safe_spec}' --miqa-model 'b={spec.safe_spec}'"
            )
        seen[spec.label] = spec
        out.append(spec)
    return out


def label_lines(texts: Iterable[str]) -> list[str]:
    """``model <safe spec> -> label <label>`` for each spec whose label is not the spec itself."""
    lines = []
    for text in texts:
        spec = parse_model_spec(text)
        if spec.label != text:
            lines.append(f"model {spec.safe} -> label {spec.label}")
    return lines
