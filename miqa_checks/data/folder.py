"""A folder of image files: one dataset, or one per immediate subfolder holding images.

Dataset id = folder name sanitised to ``[a-z0-9_]``; modality text = dataset id. Image ids
and error files are paths relative to the source folder (posix). Files with an unsupported
extension are reported as error records; hidden files (``.name``) are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import MiqaUsageError
from ..records import ErrorRecord, ImageRecord
from . import Dataset, ids, readers
from .select import pick


@dataclass(frozen=True)
class _Group:
    """One dataset of the folder: its image candidates and its other files (posix, relative)."""

    name: str
    images: tuple[str, ...]
    others: tuple[str, ...]


def _files(folder: Path, root: Path, recursive: bool) -> list[str]:
    """Non-hidden files under ``folder`` as posix paths relative to ``root``, sorted."""
    out = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            out += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    else:
        out = [p for p in folder.iterdir() if not p.is_dir() and not p.name.startswith(".")]
    return sorted(p.relative_to(root).as_posix() for p in out)


def _split(files: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image candidates, other files)."""
    images = tuple(f for f in files if readers.is_candidate(Path(f)))
    chosen = set(images)
    return images, tuple(f for f in files if f not in chosen)


def layout(root: Path) -> list[_Group]:
    """The datasets of a folder (cheap: lists files, decodes nothing)."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups: list[tuple[str, list[str]]] = []
    for sub in subdirs:
        files = _files(sub, root, recursive=True)
        if any(readers.is_candidate(Path(f)) for f in files):
            groups.append((sub.name, files))
    top = _files(root, root, recursive=False)
    if not groups or any(readers.is_candidate(Path(f)) for f in top):
        groups.insert(0, (root.resolve().name, top))
    names = ids.unique([name for name, _ in groups])
    return [_Group(name, *_split(files)) for name, (_, files) in zip(names, groups)]


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

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        if dataset not in self._groups:
            raise MiqaUsageError(f"--miqa-data {self.spec!r} has no dataset {dataset!r} (it has {sorted(self._groups)})")
        group = self._groups[dataset]

        def load_one(rel: str) -> ImageRecord:
            image = readers.read_image(self.root / rel)
            return ImageRecord(rel, dataset, dataset, image, source=rel, licence="")

        records, errors = pick(group.images, load_one, dataset=dataset, max_images=max_images, seed=seed)
        unsupported = [
            ErrorRecord(dataset, rel, f"unsupported file type '{readers.extension(Path(rel))}' (not an image)")
            for rel in group.others
        ]
        return Dataset(dataset, dataset, records, unsupported + errors)
