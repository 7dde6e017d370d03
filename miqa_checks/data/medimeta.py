"""MedIMeta: one folder per dataset with ``info.yaml``, ``images.hdf5`` (dataset ``images``) or
``images/000000.tiff ...``, and ``splits/{train,val,test}.txt``.

The test split is used (else val, else every image). Dataset id and modality text = ``id`` of
info.yaml (sanitised; the folder name when absent). image_id = ``<split>/<index:06d>`` with the
dataset-wide image index (``all/...`` without split files).

Group: when ``annotations.csv`` has a patient or study column (``GROUP_COLUMNS``), images of one
patient / study share a group, a keyed hash of the value (see ``groups``); else each image is its
own group. Its rows are images in index order, unless an image column (``INDEX_COLUMNS``) names
the image.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord, ImageRecord
from . import Dataset, groups, ids, readers
from .select import pick
from .validate import ImageError, check_decoded_bytes, check_header_size, describe, finish

SPLITS = ("test", "val")
MAX_INFO_BYTES = 1024**2
MAX_ANNOTATIONS_BYTES = 256 * 1024**2
"""A larger annotations.csv is not read (images then keep their own group)."""
GROUP_COLUMNS = (("patient_id", "patient"), ("patientid", "patient"), ("patient", "patient"),
                 ("subject_id", "patient"), ("subject", "patient"), ("study_id", "study"), ("study", "study"))
"""annotations.csv columns (lower case) that name a patient or study, in order of preference."""
INDEX_COLUMNS = ("image_path", "image", "image_id", "filename", "file", "index")


def parse_info(text: str) -> dict[str, str]:
    """Top-level ``key: scalar`` pairs of a YAML file (nested blocks and lists are ignored)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        found = re.match(r"^([A-Za-z_][\w-]*)\s*:\s*(.*?)\s*$", line)
        if not found:
            continue
        value = found.group(2)
        if value and value[0] in "\"'" and value[-1:] == value[0] and len(value) >= 2:
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[found.group(1)] = value
    return out


def is_medimeta(path: Path) -> bool:
    """A MedIMeta dataset folder (own info.yaml) or a root of such folders."""
    if (path / "info.yaml").is_file():
        return True
    return any(p.is_dir() and (p / "info.yaml").is_file() for p in path.iterdir())


@dataclass(frozen=True)
class _Folder:
    """One MedIMeta dataset folder and its info.yaml fields."""

    path: Path
    info: dict[str, str]


def _read_info(folder: Path) -> dict[str, str]:
    file = folder / "info.yaml"
    if file.stat().st_size > MAX_INFO_BYTES:
        return {}
    return parse_info(file.read_text(encoding="utf-8", errors="replace"))


def _index_of(line: str) -> int | None:
    """A split-file line or file name -> image index (``123`` or ``images/000123.tiff``), None if neither."""
    stem = Path(line.strip()).name.split(".")[0]
    return int(stem) if stem.isdigit() else None


def _annotation_groups(folder: Path, salt: bytes) -> dict[int, str]:
    """Image index -> hashed patient / study from ``annotations.csv``; {} when it has none."""
    file = folder / "annotations.csv"
    try:
        if not file.is_file() or file.stat().st_size > MAX_ANNOTATIONS_BYTES:
            return {}
        with open(file, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            columns = {str(c).strip().lower(): c for c in reader.fieldnames or [] if c}
            key, kind = next(((columns[c], kind) for c, kind in GROUP_COLUMNS if c in columns), (None, ""))
            if key is None:
                return {}
            where = next((columns[c] for c in INDEX_COLUMNS if c in columns), None)
            out: dict[int, str] = {}
            for k, row in enumerate(reader):
                value = str(row.get(key) or "").strip()
                index = _index_of(str(row.get(where) or "")) if where else k
                if value and index is not None:
                    out[index] = groups.hashed(kind, value, salt)
            return out
    except (OSError, csv.Error, ValueError):
        return {}


def _open_hdf5(file: Path) -> tuple[Any, str | None]:
    """(the ``images`` dataset of ``file`` or None, the problem when unusable); None, None when absent."""
    if not file.is_file():
        return None, None
    import h5py

    try:
        handle = h5py.File(file, "r")
    except Exception as exc:  # noqa: BLE001 - corrupt HDF5 of any kind
        return None, f"truncated or corrupt HDF5 ({describe(exc)})"
    try:
        store = handle["images"]
        if store.dtype != np.uint8 or store.ndim not in (3, 4):
            raise ImageError(f"'images' is {store.dtype} {tuple(store.shape)} (expected uint8 N x H x W [x 3])")
        check_header_size(int(store.shape[2]), int(store.shape[1]))
        if store.chunks is not None:  # reading one image decodes its whole chunk
            check_decoded_bytes(float(np.prod(store.chunks, dtype=np.float64)), "one HDF5 chunk of 'images'")
        return store, None
    except ImageError as exc:
        handle.close()
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001
        handle.close()
        return None, f"truncated or corrupt HDF5 ({describe(exc)})"


def _split(splits: Path, count: int) -> tuple[str, list[int], str | None]:
    """(split name, sorted image indices, problem) from ``test.txt``, else ``val.txt``, else all."""
    for name in SPLITS:
        file = splits / f"{name}.txt"
        if file.is_file():
            lines = [ln for ln in file.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
            indices = sorted({i for ln in lines if (i := _index_of(ln)) is not None and 0 <= i < count})
            bad = sum(1 for ln in lines if (i := _index_of(ln)) is None or not 0 <= i < count)
            return name, indices, f"{bad} line(s) name no image of this dataset" if bad else None
    return "all", list(range(count)), None


class MedIMetaSource:
    """A MedIMeta root or single dataset folder (see module docstring)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        path = Path(spec).expanduser()
        single = (path / "info.yaml").is_file()
        self.root = path.parent if single else path
        self._folders_in = [path] if single else sorted(p for p in path.iterdir() if (p / "info.yaml").is_file())

    @cached_property
    def _folders(self) -> dict[str, _Folder]:
        infos = [_read_info(p) for p in self._folders_in]
        names = ids.unique([info.get("id") or p.name for p, info in zip(self._folders_in, infos)])
        return {n: _Folder(p, info) for n, p, info in zip(names, self._folders_in, infos)}

    def dataset_names(self) -> list[tuple[str, str]]:
        return [(name, name) for name in self._folders]

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        if dataset not in self._folders:
            raise MiqaUsageError(f"--miqa-data {self.spec!r} has no dataset {dataset!r} (it has {sorted(self._folders)})")
        folder = self._folders[dataset]
        rel_dir = folder.path.relative_to(self.root).as_posix()
        licence = folder.info.get("license") or folder.info.get("licence") or ""
        tiffs = sorted((folder.path / "images").glob("*.tif*")) if (folder.path / "images").is_dir() else []
        by_index = {i: p for p in tiffs if (i := _index_of(p.name)) is not None}
        store, problem = _open_hdf5(folder.path / "images.hdf5")
        errors = [ErrorRecord(dataset, f"{rel_dir}/images.hdf5", problem)] if problem else []
        count = int(store.shape[0]) if store is not None else (max(by_index) + 1 if by_index else 0)
        if not count and not errors:
            errors.append(ErrorRecord(dataset, rel_dir, "no images.hdf5 and no images/NNNNNN.tiff files"))
        split, wanted, problem = _split(folder.path / "splits", count)
        if problem:
            errors.append(ErrorRecord(dataset, f"{rel_dir}/splits/{split}.txt", problem))
        image_groups = _annotation_groups(folder.path, groups.salt_for(folder.path))

        def load_one(image_id: str) -> ImageRecord:
            index = int(image_id.split("/")[1])
            if store is not None:
                image, where = finish(np.asarray(store[index])), f"images.hdf5[{index}]"
            else:
                path = by_index.get(index)
                if path is None:
                    raise ImageError("image file missing")
                image, where = readers.read_image(path), f"images/{path.name}"
            return ImageRecord(image_id, dataset, dataset, image, source=f"MedIMeta {rel_dir}/{where}", licence=licence,
                               group=image_groups.get(index, ""))

        def error_file(image_id: str) -> str:
            index = int(image_id.split("/")[1])
            path = by_index.get(index)
            return f"{rel_dir}/images/{path.name}" if store is None and path else f"{rel_dir}/images.hdf5[{index}]"

        try:
            records, found = pick([f"{split}/{i:06d}" for i in wanted], load_one, dataset=dataset,
                                  max_images=max_images, seed=seed, error_file=error_file)
        finally:
            if store is not None:
                store.file.close()
        return Dataset(dataset, dataset, records, errors + found)
