"""Datasets whose images are decoded only when their pixels are needed.

A source that can list its candidates without decoding them (``Source.candidates``: the
embedded samples, a folder, a manifest) is chosen through the
:class:`~miqa_checks.data.index.ImageIndex`: a candidate's ``guard`` runs first (links, file
type and size limits: nothing is read before it passes), then an image the index knows (same
file content, same reader) is chosen with its pixel digest, size and group and not decoded; an
unknown one is decoded now (so an unreadable one becomes an error record, as in
``select.pick``) and indexed. Other sources are read as before and their images hashed here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord, ImageRecord
from . import Dataset, resolve_source
from .index import ImageFacts, ImageIndex, pixel_digest
from .select import pick
from .validate import ImageError


@dataclass(frozen=True)
class Candidate:
    """An image a source can take, described without decoding it.

    files: the files its pixels come from; locator: where in them (part, crop, reader options,
    the group hashing key); decode: (the uint8 H x W (x 3) image, the group its file names or ""),
    raising like a source's ``load_one``; guard: raises ImageError when the files must not be
    read (checked before they are hashed or decoded); group: the group given by the listing (""
    : the file's, else the image id); where: the file its error record names (default: its id).
    """

    image_id: str
    files: tuple[Path, ...]
    locator: str
    decode: Callable[[], tuple[np.ndarray, str]]
    source: str = ""
    licence: str = ""
    group: str = ""
    guard: Callable[[], None] | None = None
    where: str = ""


@dataclass
class LazyImage:
    """A chosen image: what keys need (``facts``) now, the pixels (:meth:`record`) on first use."""

    image_id: str
    dataset: str
    modality: str
    facts: ImageFacts
    decode: Callable[[], tuple[np.ndarray, str]] = field(repr=False)
    source: str = ""
    licence: str = ""
    group: str = ""
    _record: ImageRecord | None = field(default=None, repr=False)

    @classmethod
    def loaded(cls, record: ImageRecord, found: str = "") -> "LazyImage":
        """An image a source already decoded (hashed now); ``found``: the group its file names."""
        image = record.image
        lazy = cls(record.image_id, record.dataset, record.modality, ImageFacts.of(image, found),
                   lambda: (image, found), record.source, record.licence, record.group)
        lazy._record = record
        return lazy

    def record(self) -> ImageRecord:
        """The decoded image record (decoded once). ImageError when the image cannot be decoded now
        or its pixels are not the ones it was listed (and keyed) with: its file changed or went
        away during the run."""
        if self._record is None:
            try:
                image = self.decode()[0]
            except ImageError as exc:
                raise ImageError(f"{self.image_id}: {exc} (since it was listed)") from exc
            except (OSError, ValueError) as exc:
                raise ImageError(f"{self.image_id}: {type(exc).__name__}: {exc} (since it was listed)") from exc
            if pixel_digest(image) != self.facts.digest:
                raise ImageError(f"{self.image_id}: its file changed since it was listed (pixels differ from "
                                 "the ones its requests were keyed with); rerun to audit the new file")
            self._record = ImageRecord(self.image_id, self.dataset, self.modality, image,
                                       source=self.source, licence=self.licence, group=self.group)
        return self._record


@dataclass
class LazyDataset:
    """The chosen images of one dataset (sorted by id) and the inputs that could not be used."""

    name: str
    modality: str
    images: list[LazyImage]
    errors: list[ErrorRecord]
    precorrupted: Callable[[str, str, int], np.ndarray | None] | None = None

    def dataset(self) -> Dataset:
        """The dataset with every chosen image decoded."""
        return Dataset(self.name, self.modality, [i.record() for i in self.images], self.errors, self.precorrupted)


def choose(name: str, modality: str, candidates: list[Candidate], index: ImageIndex, *,
           max_images: int | None, seed: int, errors: list[ErrorRecord] | None = None) -> LazyDataset:
    """``select.pick`` over candidates, decoding only those the index does not know; ``errors``:
    the listing's own error records, kept before the unreadable candidates'."""
    by_id = {c.image_id: c for c in candidates}

    def load_one(image_id: str) -> LazyImage:
        c = by_id[image_id]
        if c.guard is not None:
            c.guard()
        try:  # no file known: not indexed; a file gone: decoding says why
            key = index.key(c.files, c.locator) if c.files else None
        except OSError:
            key = None
        facts = index.get(key) if key is not None else None
        if facts is not None:
            return LazyImage(image_id, name, modality, facts, c.decode, c.source, c.licence,
                             c.group or facts.group or image_id)
        image, found = c.decode()
        record = ImageRecord(image_id, name, modality, image, source=c.source, licence=c.licence, group=c.group or found)
        lazy = LazyImage.loaded(record, found)
        if key is not None:
            index.put(key, lazy.facts)
        return lazy

    images, unread = pick(list(by_id), load_one, dataset=name, max_images=max_images, seed=seed,
                          error_file=lambda image_id: by_id[image_id].where or image_id)
    return LazyDataset(name, modality, images, list(errors or []) + unread)


def load_listed(source: Any, dataset: str, modality: str, *, max_images: int | None, seed: int) -> Dataset:
    """A listing source's ``load``: its candidates chosen and decoded (no index file)."""
    candidates, errors = source.candidates(dataset)
    chosen = choose(dataset, modality, candidates, ImageIndex(None), max_images=max_images, seed=seed, errors=errors)
    return chosen.dataset()


def load_lazy(specs: list[str], *, max_images: int | None, seed: int, index: ImageIndex) -> list[LazyDataset]:
    """Every dataset of every source, in order (see ``data.load_all``, which this backs):
    MiqaUsageError when a source yields no image or two sources define the same dataset id."""
    out: list[LazyDataset] = []
    owner: dict[str, str] = {}
    for spec in dict.fromkeys(specs):
        source = resolve_source(spec)
        listing = getattr(source, "candidates", None)
        loaded = []
        for name, modality in source.dataset_names():
            if listing is not None:
                candidates, listed_errors = listing(name)
                loaded.append(choose(name, modality, candidates, index, max_images=max_images, seed=seed,
                                     errors=listed_errors))
            else:
                ds = source.load(name, max_images=max_images, seed=seed)
                loaded.append(LazyDataset(ds.name, ds.modality, [LazyImage.loaded(r) for r in ds.records], ds.errors,
                                          ds.precorrupted))
        if not any(ds.images for ds in loaded):
            reasons = "; ".join(f"{e.file}: {e.reason}" for ds in loaded for e in ds.errors[:3])
            raise MiqaUsageError(f"--miqa-data {spec!r}: no readable image" + (f" ({reasons})" if reasons else ""))
        for ds in loaded:
            if ds.name in owner:
                raise MiqaUsageError(f"dataset id {ds.name!r} comes from both {owner[ds.name]!r} and {spec!r}")
            owner[ds.name] = spec
        out.extend(loaded)
    return out
