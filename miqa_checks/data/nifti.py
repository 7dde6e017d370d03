"""NIfTI volumes (.nii, .nii.gz) -> uint8 axial slices.

Only the requested slice is read through nibabel's array proxy (never the whole volume). A
gzipped file is inflated, streaming, up to that slice: its first volume must not decode to more
than ``MAX_FILE_DECODED_BYTES`` (header check).
Display: anterior at the top, patient right on the image right (neurological convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import intensity
from .validate import ImageError, check_decoded_bytes, check_header_size, finish

MAX_VOXELS = 2_000_000_000
"""Largest accepted volume, in voxels (header check)."""


def load(path: Path) -> Any:
    """Open a NIfTI image (header only); ImageError when unreadable or absurdly large."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        itemsize = img.get_data_dtype().itemsize
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise ImageError(f"truncated or corrupt NIfTI ({type(exc).__name__})") from None
    if len(shape) < 2:
        raise ImageError(f"NIfTI has shape {shape} (need at least 2-D)")
    if int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise ImageError(f"header declares {'x'.join(map(str, shape))} voxels (over the volume limit)")
    if str(path).lower().endswith(".gz"):
        check_decoded_bytes(float(np.prod(shape[:3], dtype=np.float64)) * itemsize, "gzipped NIfTI first volume")
    return img


def _orientation(img: Any) -> tuple[tuple[int, int, int], tuple[bool, bool]]:
    """Array axes pointing (right, anterior, superior) and whether the first two run backwards."""
    import nibabel as nib

    if len(img.shape) < 3:
        return (0, 1, 2), (False, False)
    try:
        ornt = nib.io_orientation(img.affine)
        labels = [int(o) if np.isfinite(o) else -1 for o in ornt[:3, 0]]
    except Exception:  # noqa: BLE001 - degenerate affine
        labels = [-1]
    if sorted(labels) != [0, 1, 2]:
        return (0, 1, 2), (False, False)
    axes = (labels.index(0), labels.index(1), labels.index(2))
    return axes, (bool(ornt[axes[0], 1] < 0), bool(ornt[axes[1], 1] < 0))


def axial_count(img: Any) -> int:
    """Number of axial slices (1 for a 2-D image)."""
    shape = img.shape
    return int(shape[_orientation(img)[0][2]]) if len(shape) >= 3 else 1


def read_slice(img: Any, z: int) -> np.ndarray:
    """Axial slice ``z`` of the first volume -> uint8 (rows = anterior..posterior)."""
    shape = img.shape
    (x_ax, y_ax, z_ax), (flip_x, flip_y) = _orientation(img)
    check_header_size(int(shape[x_ax]), int(shape[y_ax]))
    index: list[Any] = [0] * len(shape)
    index[x_ax] = index[y_ax] = slice(None)
    if len(shape) >= 3:
        if not 0 <= z < shape[z_ax]:
            raise ImageError(f"slice {z} out of range (volume has {shape[z_ax]})")
        index[z_ax] = z
    try:
        plane = np.asarray(img.dataobj[tuple(index)])
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise ImageError(f"truncated or corrupt NIfTI data ({type(exc).__name__})") from None
    if plane.dtype.kind == "c":
        raise ImageError("complex-valued NIfTI")
    if x_ax > y_ax:
        plane = plane.T  # now (x, y)
    if flip_x:
        plane = plane[::-1, :]
    if flip_y:
        plane = plane[:, ::-1]
    display = plane.T[::-1, :]  # rows: anterior at top; cols: increasing x
    return finish(intensity.to_uint8(np.ascontiguousarray(display)))


def read_image(path: Path) -> np.ndarray:
    """A NIfTI file -> its middle axial slice (first volume) as uint8."""
    img = load(path)
    return read_slice(img, axial_count(img) // 2)
