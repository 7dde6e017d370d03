"""Shape and size rules every image obeys before it becomes an ``ImageRecord``."""

from __future__ import annotations

import re

import numpy as np

MIN_SIDE = 8
"""Smallest accepted height and width, in pixels."""

MAX_PIXELS = 50_000_000
"""Largest accepted image, in pixels (checked from the header, before decoding)."""

MAX_FILE_DECODED_BYTES = 1024**3
"""Largest decoded size of one file, in bytes, checked from its header (or by a bounded streaming
inflate) before anything is decoded: a DICOM's inflated data set and all its frames, a NIfTI's
first volume, an HDF5 chunk, one npz row."""


class ImageError(Exception):
    """A file that cannot become an image; ``str(exc)`` is the human reason for the error record."""


def check_header_size(width: int, height: int, frames: int = 1) -> None:
    """Refuse absurd dimensions declared by a header before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageError(f"header declares {width}x{height} pixels (empty image)")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"header declares {width}x{height} pixels (over the {MAX_PIXELS // 1_000_000} MP limit)"
        )
    if frames < 0:
        raise ImageError(f"header declares {frames} frames")


def size_text(nbytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``, ``3 * 1024**3`` -> ``"3 GiB"`` (binary units, 2 significant
    digits below 100)."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.2g} {unit}"
    return f"{nbytes:.0f} B"


def check_decoded_bytes(nbytes: float, what: str) -> None:
    """Refuse a file whose declared decoded size (``what``: e.g. ``"pixel data"``) is over
    MAX_FILE_DECODED_BYTES, before decoding it."""
    if nbytes > MAX_FILE_DECODED_BYTES:
        raise ImageError(
            f"{what} would decode to {size_text(nbytes)} (over the {size_text(MAX_FILE_DECODED_BYTES)} per-file limit)"
        )


def check_finite(arr: np.ndarray) -> None:
    """Raise when a float array holds NaN or infinite values (reason gives the count)."""
    if arr.dtype.kind not in "fc":
        return
    nan = int(np.isnan(arr).sum())
    if nan:
        raise ImageError(f"NaN values ({nan} of {arr.size} pixels)")
    inf = int(np.isinf(arr).sum())
    if inf:
        raise ImageError(f"infinite values ({inf} of {arr.size} pixels)")


def finish(arr: np.ndarray) -> np.ndarray:
    """Normalise a uint8 image to H x W (grey) or H x W x 3 (RGB) and check its size.

    H x W x 1 becomes H x W; a fourth (alpha) channel is dropped; an RGB image whose three
    channels are identical becomes grey (grey is never kept stacked).
    """
    if arr.dtype != np.uint8:
        raise ImageError(f"internal: expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        if np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2]):
            arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageError(f"unsupported pixel layout {tuple(arr.shape)} (expected H x W or H x W x 3)")
    h, w = arr.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(f"{w}x{h} image is too small (min {MIN_SIDE}x{MIN_SIDE})")
    return np.ascontiguousarray(arr)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/|[A-Za-z]:[\\/])(?:[^\s'\"/\\]+[\\/])*([^\s'\"/\\]*)")


def describe(exc: BaseException, limit: int = 100) -> str:
    """``Type: message`` of an exception for an error reason: absolute paths cut to their file
    name (reports never carry absolute paths), at most ``limit`` characters of message."""
    message = _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", str(exc))
    return f"{type(exc).__name__}: {message[:limit]}" if message else type(exc).__name__
