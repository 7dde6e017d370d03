"""A folder of image files: one dataset, or one per immediate subfolder holding images.

Dataset id = folder name sanitised to ``[a-z0-9_]``; modality text = dataset id. Image ids
and error files are paths relative to the source folder (posix). Files with an unsupported
extension are reported as error records; hidden files (``.name``) are skipped.

Symbolic links to files, and links to dataset folders directly in the source folder, are
followed only when their target resolves inside the source folder; a link that leaves it, a
symlink loop or a dangling link is an error record and is never read. Links to folders deeper
in a dataset are not followed (as before: ``os.walk`` semantics), only checked. The
group of an image is its DICOM patient / study (keyed hash, see ``groups``), else its own id.

Images are listed without decoding (``candidates``): with a result store, an unchanged file is
not decoded again (``data.index``: its content hash, reader version and group key name it).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord
from . import Dataset, groups, ids, readers
from .lazy import Candidate, load_listed
from .validate import ImageError


@dataclass(frozen=True)
class _Group:
    """One dataset of the folder: its image candidates, its other files and the links refused
    (posix, relative)."""

    name: str
    images: tuple[str, ...]
    others: tuple[str, ...]
    refused: tuple[tuple[str, str], ...] = ()


def link_problem(path: Path, root: Path) -> str | None:
    """Why ``path`` (possibly a link) must not be read from the source at resolved ``root``;
    None when it resolves inside it."""
    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        return "symlink loop (not read)"
    except OSError as exc:
        return "symlink loop (not read)" if exc.errno == errno.ELOOP else "dangling link (target missing)"
    except ValueError:
        return "invalid path (not read)"
    return None if target.is_relative_to(root) else "link leaves the source folder (not read)"


class _Walk:
    """Non-hidden files under one folder, links checked against the resolved source root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.refused: list[tuple[str, str]] = []

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def entries(self, folder: Path) -> list[os.DirEntry]:
        """Non-hidden entries of ``folder`` whose links stay inside the root, sorted by name."""
        try:
            with os.scandir(folder) as it:
                found = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            self.refused.append((self._rel(folder) or ".", f"folder could not be listed ({type(exc).__name__})"))
            return []
        kept = []
        for entry in found:
            problem = link_problem(Path(entry.path), self.real_root) if entry.is_symlink() else None
            if problem:
                self.refused.append((self._rel(Path(entry.path)), problem))
            else:
                kept.append(entry)
        return kept

    def files(self, folder: Path, recursive: bool) -> list[str]:
        """Files under ``folder`` as posix paths relative to the root, sorted (links to deeper
        folders not followed)."""
        out, stack = [], [folder]
        while stack:
            current = stack.pop()
            for entry in self.entries(current):
                if entry.is_dir():
                    if recursive and not entry.is_symlink():
                        stack.append(Path(entry.path))
                else:
                    out.append(self._rel(Path(entry.path)))
        return sorted(out)


def _split(files: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image candidates, other files)."""
    images = tuple(f for f in files if readers.is_candidate(Path(f)))
    chosen = set(images)
    return images, tuple(f for f in files if f not in chosen)


def layout(root: Path) -> list[_Group]:
    """The datasets of a folder (cheap: lists files, decodes nothing). Links refused at the top
    level are reported with the first dataset."""
    top_walk = _Walk(root)
    entries = top_walk.entries(root)
    subdirs = [Path(e.path) for e in entries if e.is_dir()]
    found: list[tuple[str, list[str], list[tuple[str, str]]]] = []
    for sub in subdirs:
        walk = _Walk(root)
        files = walk.files(sub, recursive=True)
        if any(readers.is_candidate(Path(f)) for f in files):
            found.append((sub.name, files, walk.refused))
    top = sorted(Path(e.path).relative_to(root).as_posix() for e in entries if not e.is_dir())
    if not found or any(readers.is_candidate(Path(f)) for f in top):
        found.insert(0, (root.resolve().name, top, []))
    if found:
        found[0][2][:0] = top_walk.refused
    names = ids.unique([name for name, _, _ in found])
    return [_Group(name, *_split(files), tuple(refused)) for name, (_, files, refused) in zip(names, found)]


def locator(name: str, salt: bytes) -> str:
    """An image file's index locator: how it is read (its extension must match its content) and
    the source's group key (the group found in it is keyed with it)."""
    return f"file|{readers.extension(Path(name))}|{salt.hex()}"


def has_images(root: Path) -> bool:
    """True when the folder (or an immediate subfolder) holds a file with an image extension."""
    return any(group.images for group in layout(root))


class FolderSource:
    """Images in a folder tree (see module docstring)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.root = Path(spec).expanduser()

    @cached_property
    def _groups(self) -> dict[str, _Group]:
        return {g.name: g for g in layout(self.root)}

    def dataset_names(self) -> list[tuple[str, str]]:
        return [(name, name) for name in self._groups]

    def candidates(self, dataset: str) -> tuple[list[Candidate], list[ErrorRecord]]:
        """Every image file of ``dataset`` (undecoded; indexed by content and the group key) and
        the listing's errors (links refused, unsupported files)."""
        if dataset not in self._groups:
            raise MiqaUsageError(f"--miqa-data {self.spec!r} has no dataset {dataset!r} (it has {sorted(self._groups)})")
        group = self._groups[dataset]
        real_root = self.root.resolve()
        salt = groups.salt_for(self.root)

        def guard(path: Path) -> None:
            problem = link_problem(path, real_root)  # again: the tree may have changed since listing
            if problem:
                raise ImageError(problem)
            readers.check_file(path)

        def decode(path: Path) -> tuple[np.ndarray, str]:
            guard(path)
            image, found = readers.read_grouped(path, salt)
            return image, found or ""

        candidates = [
            Candidate(rel, (self.root / rel,), locator(rel, salt), partial(decode, self.root / rel), source=rel,
                      guard=partial(guard, self.root / rel))
            for rel in group.images
        ]
        refused = [ErrorRecord(dataset, rel, reason) for rel, reason in group.refused]
        unsupported = [
            ErrorRecord(dataset, rel, f"unsupported file type '{readers.extension(Path(rel))}' (not an image)")
            for rel in group.others
        ]
        return candidates, refused + unsupported

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        return load_listed(self, dataset, dataset, max_images=max_images, seed=seed)
