"""Deterministic choice of images from a dataset's candidates, skipping unreadable ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from ..records import ErrorRecord
from .validate import ImageError, describe


class _Loaded(Protocol):
    image_id: str


#: A loaded candidate: an ``ImageRecord``, or a lazy image (``data.lazy.LazyImage``).
T = TypeVar("T", bound=_Loaded)


def order(candidates: Sequence[str], max_images: int | None, seed: int) -> list[str]:
    """The order ``pick`` visits ``candidates`` in: sorted, then ``np.random.default_rng(seed)``'s
    permutation when ``max_images`` is set."""
    ordered = sorted(candidates)
    if max_images is None:
        return ordered
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def pick(
    candidates: Sequence[str],
    load_one: Callable[[str], T],
    *,
    dataset: str,
    max_images: int | None,
    seed: int,
    error_file: Callable[[str], str] = str,
) -> tuple[list[T], list[ErrorRecord]]:
    """Load up to ``max_images`` good images -> (records sorted by image_id, error records).

    The candidate ids are sorted and visited in the order of ``np.random.default_rng(seed)``'s
    permutation (all of them, sorted, when ``max_images`` is None). A candidate whose
    ``load_one`` raises becomes an error record (file = ``error_file(candidate)``) and the next
    candidate is tried, so a dataset keeps ``max_images`` images while enough are readable.
    """
    if max_images is not None and max_images < 1:
        return [], []
    ordered = order(candidates, max_images, seed)
    records: list[T] = []
    errors: list[ErrorRecord] = []
    for cid in ordered:
        if max_images is not None and len(records) >= max_images:
            break
        try:
            records.append(load_one(cid))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
            errors.append(ErrorRecord(dataset, error_file(cid), failure(exc)))
    records.sort(key=lambda r: r.image_id)
    return records, errors


def failure(exc: BaseException) -> str:
    """The error record's reason for a candidate whose loading raised ``exc``."""
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"unreadable ({describe(exc)})"
