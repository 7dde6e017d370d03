"""MediMeta-C: ``<root>/<dataset>/<split>/clean.npz`` and ``<corruption>_severity_<k>.npz``.

Split ``test`` (else ``val``). Each npz holds ``images`` (uint8 N x 224 x 224 x 3) and
``labels``. Modality text = dataset id; image_id = ``<split>/<index:06d>``. Images whose three
channels are equal (the grey datasets: mammo_calc, mammo_mass, oct, pneumonia) come back H x W.
The published ``pixelate`` files serve our ``pixelation`` corruption.

Rows are streamed (see ``npz``): the clean rows ``pick`` will visit first are read in one pass;
each published corrupted file is read once, in one pass, for the chosen images only (the last
``CACHED_FILES`` files are kept).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord, ImageRecord
from . import Dataset, npz
from .select import order, pick
from .validate import ImageError, finish

SPLITS = ("test", "val")
PUBLISHED_NAMES = {"pixelation": "pixelate"}
"""Our corruption id -> the name used in the published file names (others are identical)."""
CACHED_FILES = 4
"""Published corrupted files whose chosen rows stay in memory at once, per dataset."""


def _index(image_id: str) -> int:
    """``test/000012`` -> 12."""
    return int(image_id.split("/")[1])


def _split_dir(folder: Path) -> Path | None:
    """``folder/test`` (else ``folder/val``) when it holds clean.npz."""
    for split in SPLITS:
        if (folder / split / "clean.npz").is_file():
            return folder / split
    return None


def is_medimeta_c(path: Path) -> bool:
    """A root with dataset folders holding ``<split>/clean.npz``, or one such dataset folder."""
    if _split_dir(path) is not None:
        return True
    return any(p.is_dir() and _split_dir(p) is not None for p in path.iterdir())


def corrupted_file(split_dir: Path, corruption: str, severity: int) -> Path:
    """Path of the published corrupted npz for (our corruption id, severity 1..5)."""
    return split_dir / f"{PUBLISHED_NAMES.get(corruption, corruption)}_severity_{int(severity)}.npz"


class MediMetaCSource:
    """A MediMeta-C root, or a single MediMeta-C dataset folder (see module docstring)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        path = Path(spec).expanduser()
        single = _split_dir(path) is not None
        self.root = path.parent if single else path
        self._only = path.resolve().name if single else None

    @cached_property
    def _splits(self) -> dict[str, Path]:
        if self._only is not None:
            found = {self._only: _split_dir(self.root / self._only)}
        else:
            found = {p.name: _split_dir(p) for p in sorted(self.root.iterdir()) if p.is_dir()}
        return {name: d for name, d in found.items() if d is not None}

    def dataset_names(self) -> list[tuple[str, str]]:
        return [(name, name) for name in self._splits]

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        if dataset not in self._splits:
            raise MiqaUsageError(f"--miqa-data {self.spec!r} has no dataset {dataset!r} (it has {sorted(self._splits)})")
        split_dir = self._splits[dataset]
        split = split_dir.name
        clean_file = split_dir / "clean.npz"
        try:
            clean = npz.images(clean_file)
        except ImageError as exc:
            return Dataset(dataset, dataset, [], [ErrorRecord(dataset, self._rel(clean_file), str(exc))])

        candidates = [f"{split}/{i:06d}" for i in range(len(clean))]
        try:
            first = order(candidates, max_images, seed)[: max_images if max_images is not None else None]
            prefetched = clean.take(_index(c) for c in first)
        except ImageError as exc:
            return Dataset(dataset, dataset, [], [ErrorRecord(dataset, self._rel(clean_file), str(exc))])

        def load_one(image_id: str) -> ImageRecord:
            index = _index(image_id)
            row = prefetched.pop(index, None)
            image = finish(row if row is not None else clean[index])
            source = f"MediMeta-C {self._rel(clean_file)}[{index}]"
            return ImageRecord(image_id, dataset, dataset, image, source=source, licence="")

        records, errors = pick(
            candidates, load_one, dataset=dataset, max_images=max_images, seed=seed,
            error_file=lambda image_id: f"{self._rel(clean_file)}[{int(image_id.split('/')[1])}]",
        )
        prefetched.clear()
        result = Dataset(dataset, dataset, records, errors)
        reported: set[str] = set()
        chosen = [_index(r.image_id) for r in records]
        cache: OrderedDict[Path, dict[int, np.ndarray]] = OrderedDict()

        def rows_of(path: Path) -> dict[int, np.ndarray]:
            """The chosen images' rows of one published file (one streaming pass, LRU-cached)."""
            if path in cache:
                cache.move_to_end(path)
                return cache[path]
            cache[path] = npz.images(path).take(chosen)
            while len(cache) > CACHED_FILES:
                cache.popitem(last=False)
            return cache[path]

        def precorrupted(image_id: str, corruption: str, severity: int) -> np.ndarray | None:
            """The published corrupted image, None when its file is missing or unusable (reported once)."""
            path = corrupted_file(split_dir, corruption, severity)
            if not path.is_file():
                return None
            try:
                index = _index(image_id)
                arr = npz.images(path)
                if not 0 <= index < len(arr):
                    raise ImageError(f"has {len(arr)} images, no index {index}")
                row = rows_of(path).get(index)
                return finish(row if row is not None else arr[index])
            except (ImageError, ValueError, IndexError) as exc:
                rel = self._rel(path)
                if rel not in reported:
                    reported.add(rel)
                    result.errors.append(ErrorRecord(dataset, rel, str(exc)))
                return None

        result.precorrupted = precorrupted
        return result
