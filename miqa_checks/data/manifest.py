"""A manifest CSV: columns ``path, dataset, modality`` (optional ``image_id``, ``group``).

Paths are resolved relative to the manifest's folder; a path that leaves it (``..``, absolute,
symlink escape), a symlink loop or a NUL byte is an error record and is never read. Rows with an
empty or invalid dataset id are error records too; they are reported with the manifest's first
dataset (sorted), since they belong to none.

``group``: rows sharing a value are not independent (one patient, one series ...); the record
carries a keyed hash of it (the value itself may identify a patient). Without it: the DICOM
patient / study hash, else the image's own id.

Rows are listed without decoding (``candidates``): with a result store, an unchanged file is not
decoded again (``data.index``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord
from . import Dataset, folder, groups, ids, readers
from .lazy import Candidate, load_listed
from .validate import ImageError

REQUIRED = ("path", "dataset", "modality")
MAX_MANIFEST_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class _Row:
    """One usable manifest row."""

    image_id: str
    path: str
    modality: str
    group: str = ""


class ManifestSource:
    """Images listed in a CSV file (see module docstring)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.file = Path(spec).expanduser()
        self.root = self.file.parent.resolve()

    def _read_rows(self) -> list[dict[str, str]]:
        """CSV rows with stripped keys and values; MiqaUsageError for a file that is not a manifest."""
        if self.file.stat().st_size > MAX_MANIFEST_BYTES:
            raise MiqaUsageError(f"--miqa-data {self.spec!r}: manifest over {MAX_MANIFEST_BYTES // 1024**2} MiB")
        try:
            with open(self.file, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = [c.strip().lower() for c in (reader.fieldnames or [])]
                missing = [c for c in REQUIRED if c not in columns]
                if missing:
                    raise MiqaUsageError(
                        f"--miqa-data {self.spec!r}: manifest lacks column(s) {', '.join(missing)} "
                        f"(needs {', '.join(REQUIRED)}; optional image_id, group)"
                    )
                return [
                    {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                    for row in reader
                ]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise MiqaUsageError(f"--miqa-data {self.spec!r}: not a readable CSV manifest ({exc})") from None

    def _inside(self, raw: str) -> Path:
        """The resolved file for ``raw``; ImageError when it leaves the manifest folder or cannot
        be resolved (symlink loop, NUL byte)."""
        if not raw or PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute():
            raise ImageError("path leaves the manifest folder (not read)")
        if "\x00" in raw:
            raise ImageError("path holds a NUL byte (not read)")
        try:
            target = (self.root / raw).resolve()
        except RuntimeError:
            raise ImageError("symlink loop (not read)") from None
        except (OSError, ValueError) as exc:
            raise ImageError(f"path cannot be resolved ({type(exc).__name__}; not read)") from None
        if not target.is_relative_to(self.root):
            raise ImageError("path leaves the manifest folder (not read)")
        return target

    @cached_property
    def _parsed(self) -> tuple[dict[str, list[_Row]], dict[str, str], dict[str, list[ErrorRecord]], list[ErrorRecord]]:
        """(rows per dataset, modality per dataset, row errors per dataset, errors of no dataset)."""
        rows: dict[str, list[_Row]] = {}
        modality: dict[str, str] = {}
        errors: dict[str, list[ErrorRecord]] = {}
        orphans: list[ErrorRecord] = []
        seen: set[tuple[str, str]] = set()
        for n, row in enumerate(self._read_rows(), start=2):
            raw, name = row.get("path", ""), row.get("dataset", "")
            absolute = PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute()
            where = f"row {n}" if not raw or absolute or "\x00" in raw else raw  # never report an absolute path
            if not name:
                orphans.append(ErrorRecord("", where, f"row {n}: empty dataset id"))
                continue
            if not ids.is_valid(name):
                orphans.append(ErrorRecord(name, where, f"row {n}: unknown dataset id {name!r} (use a-z, 0-9, _)"))
                continue
            mod = row.get("modality") or name
            problem = None
            image_id = row.get("image_id") or PurePosixPath(raw.replace("\\", "/")).as_posix()
            if not raw:
                problem = f"row {n}: empty path"
            elif (outside := _problem(self._inside, raw)) is not None:
                problem = f"row {n}: {outside}"
            elif modality.setdefault(name, mod) != mod:
                problem = f"row {n}: modality {mod!r} conflicts with {modality[name]!r} for this dataset"
            elif (name, image_id) in seen:
                problem = f"row {n}: duplicate image_id {image_id!r}"
            if problem:
                errors.setdefault(name, []).append(ErrorRecord(name, where, problem))
                rows.setdefault(name, [])
                continue
            seen.add((name, image_id))
            rows.setdefault(name, []).append(_Row(image_id, raw, mod, row.get("group", "")))
        for name in rows:
            modality.setdefault(name, name)
        return rows, modality, errors, orphans

    def dataset_names(self) -> list[tuple[str, str]]:
        rows, modality, _, orphans = self._parsed
        if not rows:
            detail = "; ".join(e.reason for e in orphans[:3])
            raise MiqaUsageError(f"--miqa-data {self.spec!r}: manifest names no usable dataset" + (f" ({detail})" if detail else ""))
        return [(name, modality[name]) for name in sorted(rows)]

    def candidates(self, dataset: str) -> tuple[list[Candidate], list[ErrorRecord]]:
        """Every usable row of ``dataset`` as an undecoded image and the rows' errors (the
        manifest's first dataset also takes the rows of no dataset)."""
        rows, _, row_errors, orphans = self._parsed
        if dataset not in rows:
            raise MiqaUsageError(f"--miqa-data {self.spec!r} has no dataset {dataset!r}")
        salt = groups.salt_for(self.root)

        def guard(raw: str) -> Path:
            path = self._inside(raw)  # again: the file system may have changed since parsing
            if not path.is_file():
                raise ImageError("file not found")
            readers.check_file(path)
            return path

        def decode(raw: str) -> tuple[np.ndarray, str]:
            image, found = readers.read_grouped(guard(raw), salt)
            return image, found or ""

        def target(raw: str) -> Path:  # the file read: its extension is the one checked
            try:
                return self._inside(raw)
            except ImageError:  # changed since parsing: the guard reports it
                return self.root / raw

        candidates = [
            Candidate(r.image_id, (target(r.path),), folder.locator(target(r.path).name, salt), partial(decode, r.path),
                      source=r.path, group=groups.hashed("group", r.group, salt) if r.group else "",
                      guard=partial(guard, r.path), where=r.path)
            for r in rows[dataset]
        ]
        extra = orphans if dataset == min(rows) else []
        return candidates, extra + row_errors.get(dataset, [])

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        _, modality, _, _ = self._parsed
        if dataset not in modality:
            raise MiqaUsageError(f"--miqa-data {self.spec!r} has no dataset {dataset!r}")
        return load_listed(self, dataset, modality[dataset], max_images=max_images, seed=seed)


def _problem(check: Callable[[str], object], raw: str) -> str | None:
    """The ImageError reason ``check(raw)`` raises, None when it passes."""
    try:
        check(raw)
    except ImageError as exc:
        return str(exc)
    return None
