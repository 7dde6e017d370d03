"""Safe output primitives: atomic writes, CSV cells safe against formula injection, scrubbing.

Everything that reaches a report goes through this module:

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: temp file in the same folder,
  flush + fsync, ``os.replace``; a crash mid-write never leaves a half-written file under the
  final name (the previous version, if any, stays intact).
- :func:`write_csv`: one CSV with fixed columns; floats formatted here (``.10g``, NaN/None
  empty), strings scrubbed and formula-escaped (OWASP: a leading ``=``, ``+``, ``-``, ``@``,
  tab or CR gets a ``'`` prefix). Genuine numbers are never escaped.
- :func:`escape_cell` / :func:`unescape_cell`: the escape and its exact inverse.
- :func:`scrub`: removes absolute local paths, API keys and DICOM patient fields from free text.

Stdlib only: importing this module is cheap.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "escape_cell",
    "unescape_cell",
    "format_cell",
    "format_float",
    "write_csv",
    "scrub",
    "printable",
    "env_secrets",
    "secrets_pinned",
    "sanitize_filename",
]

# --------------------------------------------------------------------------- atomic writes


_TEMP_MARK = ".miqa-"
_OWN_TEMP = re.compile(r"^\..+\.miqa-[a-z0-9_]{8}\.tmp$")
"""This tool's temp names: ``.<final name>.miqa-<8 random [a-z0-9_]>.tmp`` (``tempfile.mkstemp``)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file beside it, fsync, ``os.replace``).

    On any failure the temp file is removed and the previous content of ``path`` (if any) is
    left untouched. Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{_TEMP_MARK}", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _set_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def is_own_temp_name(name: str) -> bool:
    """True for a temp file name that :func:`atomic_write_bytes` creates (and nothing else)."""
    return bool(_OWN_TEMP.match(name))


def remove_stale_temp_files(folder: str | os.PathLike, *, older_than_s: float = 600.0) -> int:
    """Delete this tool's temp files (:func:`is_own_temp_name`) left by writes killed mid-way and
    older than ``older_than_s`` (a concurrent writer's live temp file is never touched; other
    programs' ``*.tmp`` files are never touched). Returns how many were removed."""
    removed = 0
    cutoff = time.time() - older_than_s
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            if is_own_temp_name(tmp.name) and tmp.is_file() and not tmp.is_symlink() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except OSError:
            continue
    return removed


_UMASK: list[int] = []


def _set_mode(tmp: str, final: Path) -> None:
    """mkstemp creates 0600 files; give the result the mode a plain ``open`` would (or keep the
    mode of the file being replaced)."""
    try:
        mode = final.stat().st_mode & 0o777
    except OSError:
        if not _UMASK:
            old = os.umask(0o022)
            os.umask(old)
            _UMASK.append(old)
        mode = 0o666 & ~_UMASK[0]
    try:
        os.chmod(tmp, mode)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomic text write (UTF-8, newlines written as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the OS allows it (best effort; no-op on Windows)."""
    if os.name != "posix":
        return
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- scrubbing

_KEY_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"hf_[A-Za-z0-9]{16,}"),
    re.compile(r"Bearer\s+\S+", re.IGNORECASE),
    re.compile(r"\bBasic\s+[A-Za-z0-9+/]{6,}={0,2}"),
]
# ``scheme://user:secret@host``: the whole userinfo goes (a user name can be a token too).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>]+@")
# ``?api_key=...`` / ``&token=...`` / ``;sig=...`` in a URL: keep the name, redact the value.
_QUERY_TOKEN = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|sig|signature|auth|credential)[a-z0-9_.-]*)=)"
    r"[^&#;\s'\"<>]+"
)
# ``api_key=...``, ``"authorization": "..."``: keep the name, redact the value.
_KEY_ASSIGN = re.compile(
    r"(?i)\b(api[_-]?key|access[_-]?token|auth[_-]?token|authorization|password|secret)"
    r"([\"']?\s*[:=]\s*[\"']?)([^\s\"',&;]+)"
)
# DICOM patient fields written as ``PatientName=DOE^JOHN`` / ``PatientID: 123`` /
# ``(0010,0010) ...``: keep the field name, drop the value.
_PATIENT_ASSIGN = re.compile(
    r"\b((?:Other)?Patient[A-Za-z]*)(\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_PATIENT_TAG = re.compile(r"\(0010,\s*[0-9A-Fa-f]{4}\)[^\n,;]*")
# URLs are kept as they are (server base URLs are provenance, not local paths).
_URL = r"(?P<url>\b(?:https?|wss?)://[^\s'\"<>]+)"
_POSIX_PATH = r"(?P<posix>(?<![\w.])/(?:[\w.-]+/)+[\w.-]*)"
_WIN_PATH = r"(?P<win>\b[A-Za-z]:[\\/](?:[^\\/\s:*?\"<>|]+[\\/])*[^\\/\s:*?\"<>|]*)"
_PATHS = re.compile(f"{_URL}|{_POSIX_PATH}|{_WIN_PATH}")
_ENV_KEYS = ("MIQA_OPENAI_API_KEY", "OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

REDACTED = "<redacted>"


def _path_repl(m: re.Match) -> str:
    if m.group("url"):
        return m.group("url")
    p = m.group("posix") or m.group("win") or ""
    base = re.split(r"[\\/]", p.rstrip("\\/"))[-1] if p.rstrip("\\/") else ""
    return f"<path>/{base}"


def env_secrets() -> tuple[str, ...]:
    """Current values (4+ chars) of the API-key env vars that :func:`scrub` redacts."""
    return tuple(v for k in _ENV_KEYS if len(v := os.environ.get(k, "") or "") >= 4)


_PINNED: list[tuple[str, ...]] = []


@contextmanager
def secrets_pinned() -> Iterator[None]:
    """Within the block :func:`scrub` redacts the env values read once at its start, instead of
    reading the environment on every call (writing the reports scrubs tens of thousands of cells)."""
    _PINNED.append(env_secrets())
    try:
        yield
    finally:
        _PINNED.pop()


def scrub(text: Any, *, secrets: tuple[str, ...] | None = None) -> str:
    """Remove local absolute paths, API keys and DICOM patient fields from ``text``.

    - ``/home/me/data/x.png`` -> ``<path>/x.png`` (also Windows ``C:\\...``); http(s) URLs stay.
    - ``sk-...``, ``hf_...``, ``Bearer ...``, ``api_key=...``, and the values of the env vars
      ``MIQA_OPENAI_API_KEY``, ``OPENAI_API_KEY``, ``HF_TOKEN`` -> ``<redacted>``.
    - ``PatientName=DOE^JOHN`` -> ``PatientName=<redacted>``; ``(0010,0010) ...`` -> redacted.
    - credentials in URLs: ``http://user:pw@h`` -> ``http://<redacted>@h``; ``?api_key=K``,
      ``&token=K``, ``&sig=K`` -> ``?api_key=<redacted>``; ``Basic <b64>`` -> ``<redacted>``.
    - control characters other than newline and tab -> ``\\xNN`` (:func:`printable`).

    ``None`` becomes ``""``; non-strings are converted with ``str`` first. ``secrets``: the env
    values to redact (default: read now via :func:`env_secrets`; pass it when scrubbing many cells).

    >>> scrub("cannot read /home/ann/x/img.png with key sk-abcdefgh12345")
    'cannot read <path>/img.png with key <redacted>'
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text
    if secrets is None:
        secrets = _PINNED[-1] if _PINNED else env_secrets()
    return _scrub_cached(text, secrets)


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_UNPRINTABLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: Any, *, multiline: bool = False) -> str:
    """``text`` with control characters (ANSI escapes, NUL, CR, C1, lone surrogates) written as
    ``\\xNN`` / ``\\uNNNN``: safe for a terminal line and for XML 1.0. ``multiline`` keeps ``\\n``
    and ``\\t``.

    >>> printable("ok\\x1b[31m\\rbad")
    'ok\\\\x1b[31m\\\\x0dbad'
    """
    text = "" if text is None else str(text)
    if text.isascii() and text.isprintable():  # nothing to escape (the common case)
        return text
    pattern = _UNPRINTABLE if multiline else _UNPRINTABLE_LINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


@lru_cache(maxsize=65536)
def _scrub_cached(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _QUERY_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
    for pat in _KEY_PATTERNS:
        text = pat.sub(REDACTED, text)
    text = _KEY_ASSIGN.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _PATIENT_TAG.sub(REDACTED, text)
    text = _PATIENT_ASSIGN.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    if "/" in text or "\\" in text:
        text = _PATHS.sub(_path_repl, text)
    return printable(text, multiline=True)


# --------------------------------------------------------------------------- CSV cells

_DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "\n")
# Escaped iff (any number of quotes) + dangerous char, so that escape/unescape is a bijection
# (a genuine "'=x" is written "''=x" and read back as "'=x").
_NEEDS_ESCAPE = re.compile(r"^'*[=+\-@\t\r\n]")
_IS_ESCAPED = re.compile(r"^'+[=+\-@\t\r\n]")


def escape_cell(s: str) -> str:
    """OWASP CSV-injection escape of a *string* cell: prefix ``'`` when it could be a formula."""
    if s and _NEEDS_ESCAPE.match(s):
        return "'" + s
    return s


def unescape_cell(s: str) -> str:
    """Exact inverse of :func:`escape_cell` (for cells read back from our CSVs)."""
    if s and _IS_ESCAPED.match(s):
        return s[1:]
    return s


def format_float(x: float) -> str:
    """A float as CSV text: ``""`` for NaN, ``inf``/``-inf``, else ``format(x, ".10g")``."""
    x = float(x)
    if math.isnan(x):
        return ""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return format(x, ".10g")


def format_cell(value: Any, *, scrub_strings: bool = True,
                secrets: tuple[str, ...] | None = None) -> str:
    """One CSV cell: numbers formatted (never escaped), strings scrubbed + escaped.

    None / NaN -> ``""``; bool -> ``true``/``false``; int -> ``str``; float -> :func:`format_float`;
    numpy scalars behave like their Python counterparts; anything else is text.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    # numpy scalars without importing numpy
    tname = type(value).__module__
    if tname == "numpy":
        kind = getattr(getattr(value, "dtype", None), "kind", "")
        if kind == "b":
            return "true" if bool(value) else "false"
        if kind in "iu":
            return str(int(value))
        if kind == "f":
            return format_float(float(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    # NUL dropped; a bare CR becomes LF: csv quotes only cells holding the line terminator (LF), so
    # an unquoted CR in a model's raw text would split the row for every reader
    text = str(value).replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    if scrub_strings:
        text = scrub(text, secrets=secrets)
    return escape_cell(text)


def write_csv(
    path: str | os.PathLike,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    scrub_strings: bool = True,
) -> Path:
    """Write ``rows`` (dicts) as a CSV with exactly ``columns``, atomically.

    Missing keys become empty cells; keys not in ``columns`` are ignored. Every string cell is
    scrubbed (:func:`scrub`) and formula-escaped (:func:`escape_cell`); numbers are formatted
    by :func:`format_cell` and never escaped. UTF-8, ``\\n`` line ends, header always written.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(columns))
    secrets = env_secrets()
    texts: dict[str, str] = {}  # each distinct string scrubbed and escaped once

    def cell(value: Any) -> str:
        kind = type(value)
        if kind is float:
            return format_float(value)
        if kind is str:
            out = texts.get(value)
            if out is None:
                out = texts[value] = format_cell(value, scrub_strings=scrub_strings, secrets=secrets)
            return out
        return format_cell(value, scrub_strings=scrub_strings, secrets=secrets)

    for row in rows:
        w.writerow([cell(row.get(c)) for c in columns])
    return atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- file names

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_filename(name: Any, *, max_len: int = 100) -> str:
    """A file-name component using only ``[A-Za-z0-9._-]`` (``org/model:v1`` -> ``org_model_v1``).

    Never empty, never starts with ``.`` or ``-``; long names are cut and get a short hash.
    """
    raw = "" if name is None else str(name)
    s = _UNSAFE_NAME.sub("_", raw).strip("._-") or "unnamed"
    if len(s) > max_len:
        import hashlib

        h = hashlib.sha1(raw.encode("utf-8", "replace")).hexdigest()[:8]
        s = s[: max_len - 9].rstrip("._-") + "_" + h
    return s
