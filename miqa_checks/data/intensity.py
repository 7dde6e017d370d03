"""Intensity mapping to 8 bits: rescale, windowing, robust percentile window, inversion.

All functions take numeric arrays of any dtype and never wrap around: values are mapped
through a linear window and clipped to 0..255. Memory: 8- and 16-bit integer images get their
percentiles from a histogram and every image is windowed in blocks of ``BLOCK`` values, so the
float64 temporaries stay small (a 49 MP 16-bit image no longer needs several full float copies).
"""

from __future__ import annotations

import numpy as np

from .validate import ImageError, check_finite

PERCENTILES = (0.5, 99.5)
"""Robust window used when no window is given: these percentiles map to 0 and 255."""
BLOCK = 1 << 20
"""Values converted to float64 at a time (8 MiB per temporary)."""


def _blocks(flat: np.ndarray):  # noqa: ANN202 - yields (start, stop)
    for start in range(0, flat.size, BLOCK):
        yield start, min(start + BLOCK, flat.size)


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's percentile interpolation, same rounding (``numpy.lib._function_base_impl._lerp``)."""
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


def _histogram_percentiles(arr: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
    """``np.percentile(arr, p)`` (linear) for 8/16-bit integers, from a histogram built block-wise."""
    offset = int(np.iinfo(arr.dtype).min)
    counts = np.zeros(1 << (8 * arr.dtype.itemsize), np.int64)
    flat = arr.reshape(-1)
    for start, stop in _blocks(flat):
        counts += np.bincount(flat[start:stop].astype(np.int64) - offset, minlength=counts.size)
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])

    def order_stat(k: int) -> float:  # k-th smallest value (0-based)
        return float(np.searchsorted(cumulative, k, side="right") + offset)

    out = []
    for p in percentiles:
        h = (n - 1) * (p / 100.0)
        lo = int(np.floor(h))
        out.append(_lerp(order_stat(lo), order_stat(min(lo + 1, n - 1)), h - lo))
    return out


def rescale(arr: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Stored values -> modality units (e.g. HU for CT): ``arr * slope + intercept`` as float64."""
    out = arr.astype(np.float64)
    if slope != 1.0:
        out *= slope
    if intercept != 0.0:
        out += intercept
    return out


def dicom_window_bounds(center: float, width: float) -> tuple[float, float]:
    """DICOM linear VOI window (PS3.3 C.11.2.1.2.1) as the (low, high) values mapping to 0 and 255."""
    if not np.isfinite(center) or not np.isfinite(width) or width < 1:
        raise ValueError(f"invalid window centre {center} / width {width}")
    low = center - 0.5 - (width - 1) / 2
    return low, low + (width - 1)


def percentile_bounds(arr: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float]:
    """Robust (low, high) window: the given percentiles of all values (all channels together)."""
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 and arr.size:
        low, high = _histogram_percentiles(arr, percentiles)
    else:
        low, high = np.percentile(arr, percentiles)
    return float(low), float(high)


def apply_window(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` -> 0 and ``high`` -> 255 linearly, clip, round: uint8 of the same shape.

    A degenerate window (high <= low) maps values above ``low`` to 255 and the rest to 0.
    """
    flat = np.ascontiguousarray(arr).reshape(-1)
    out = np.empty(flat.size, np.uint8)
    for start, stop in _blocks(flat):
        x = flat[start:stop].astype(np.float64)
        if high <= low:
            out[start:stop] = np.where(x > low, 255, 0)
        else:
            y = (x - low) * (255.0 / (high - low))
            out[start:stop] = np.clip(np.rint(y), 0, 255)
    return out.reshape(arr.shape)


def to_uint8(arr: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Any numeric image -> uint8, same shape.

    uint8 input without a window is returned unchanged; everything else (16-bit, signed,
    float) goes through ``window`` (low, high) or, when None, the robust percentile window.
    NaN / infinite values raise ``ImageError``.
    """
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise ImageError(f"unsupported pixel type {arr.dtype}")
    check_finite(arr)
    if arr.size == 0:
        raise ImageError("image has no pixels")
    if arr.dtype == np.uint8 and window is None:
        return arr
    low, high = window if window is not None else percentile_bounds(arr)
    return apply_window(arr, low, high)


def invert(img: np.ndarray) -> np.ndarray:
    """255 - img (MONOCHROME1 display: low values are white)."""
    return (255 - img).astype(np.uint8)
