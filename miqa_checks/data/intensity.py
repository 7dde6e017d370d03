"""Intensity mapping to 8 bits: rescale, windowing, robust percentile window, inversion.

All functions take numeric arrays of any dtype and never wrap around: values are mapped
through a linear window and clipped to 0..255.
"""

from __future__ import annotations

import numpy as np

from .validate import ImageError, check_finite

PERCENTILES = (0.5, 99.5)
"""Robust window used when no window is given: these percentiles map to 0 and 255."""


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
    low, high = np.percentile(arr, percentiles)
    return float(low), float(high)


def apply_window(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` -> 0 and ``high`` -> 255 linearly, clip, round: uint8 of the same shape.

    A degenerate window (high <= low) maps values above ``low`` to 255 and the rest to 0.
    """
    x = arr.astype(np.float64, copy=False)
    if high <= low:
        return np.where(x > low, 255, 0).astype(np.uint8)
    y = (x - low) * (255.0 / (high - low))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


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
