"""Deterministic choice of images from a dataset's candidates, skipping unreadable ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..records import ErrorRecord, ImageRecord
from .validate import ImageError, describe


def order(candidates: Sequence[str], max_images: int | None, seed: int) -> list[str]:
    """The order ``pick`` visits ``candidates`` in: sorted, then ``np.random.default_rng(seed)``'s
    permutation when ``max_images`` is set."""
    ordered = sorted(candidates)
    if max_images is None:
        return ordered
    return [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]


def pick(
    candidates: Sequence[str],
    load_one: Callable[[str], ImageRecord],
    *,
    dataset: str,
    max_images: int | None,
    seed: int,
    error_file: Callable[[str], str] = str,
) -> tuple[list[ImageRecord], list[ErrorRecord]]:
    """Load up to ``max_images`` good images -> (records sorted by image_id, error records).

    The candidate ids are sorted and visited in the order of ``np.random.default_rng(seed)``'s
    permutation (all of them, sorted, when ``max_images`` is None). A candidate whose
    ``load_one`` raises becomes an error record (file = ``error_file(candidate)``) and the next
    candidate is tried, so a dataset keeps ``max_images`` images while enough are readable.
    """
    if max_images is not None and max_images < 1:
        return [], []
    ordered = order(candidates, max_images, seed)
    records: list[ImageRecord] = []
    errors: list[ErrorRecord] = []
    for cid in ordered:
        if max_images is not None and len(records) >= max_images:
            break
        try:
            records.append(load_one(cid))
        except ImageError as exc:
            errors.append(ErrorRecord(dataset, error_file(cid), str(exc)))
        except MemoryError:
            errors.append(ErrorRecord(dataset, error_file(cid), "out of memory while decoding"))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
            errors.append(ErrorRecord(dataset, error_file(cid), f"unreadable ({describe(exc)})"))
    records.sort(key=lambda r: r.image_id)
    return records, errors
