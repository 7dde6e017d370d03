"""Raster files (PNG, JPEG, TIFF, BMP) -> uint8 images via Pillow (tifffile for TIFFs Pillow refuses)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from . import intensity
from .validate import MAX_PIXELS, ImageError, check_header_size, describe, finish

MAX_DECODED_BYTES = 8 * MAX_PIXELS
"""Largest decoded TIFF page accepted by the tifffile fallback, in bytes."""

_DIRECT_MODES = {"L", "LA", "RGB", "RGBA"}
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def header_dims(head: bytes) -> tuple[int, int] | None:
    """(width, height) read straight from a PNG IHDR or BMP header, None for other formats."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"BM") and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    return None


def _from_pil(im) -> np.ndarray:  # noqa: ANN001 - PIL.Image.Image, imported lazily
    """An opened Pillow image -> uint8 array (alpha dropped by ``finish``; 16-bit / float windowed)."""
    mode = im.mode
    if mode in _HIGH_DEPTH_MODES:
        return intensity.to_uint8(np.asarray(im))
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif mode not in _DIRECT_MODES:  # CMYK, YCbCr, LAB, HSV, ...
        im = im.convert("RGB")
    return np.asarray(im)


def _read_tifffile(path: Path) -> np.ndarray:
    """TIFFs Pillow cannot open (float RGB, 16-bit RGB, ...) via tifffile, first page only."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            check_header_size(int(page.imagewidth), int(page.imagelength))
            nbytes = int(np.prod(page.shape, dtype=np.float64)) * page.dtype.itemsize
            if nbytes > MAX_DECODED_BYTES:
                raise ImageError(f"TIFF page would decode to {nbytes / 1024**2:.0f} MiB (over the limit)")
            arr = page.asarray()
            white_is_zero = int(page.photometric) == 0
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any tifffile failure is a bad file
        raise ImageError(f"truncated or corrupt TIFF ({describe(exc, 80)})") from None
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (S, H, W) -> (H, W, S)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    img = intensity.to_uint8(arr)
    return intensity.invert(img) if white_is_zero else img


def read_image(path: Path, kind: str) -> np.ndarray:
    """Read a raster file whose content is ``kind`` (``PNG``, ``JPEG``, ``TIFF``, ``BMP``) -> uint8."""
    from PIL import Image, UnidentifiedImageError

    with open(path, "rb") as fh:
        head = fh.read(32)
    dims = header_dims(head)
    if dims is not None:
        check_header_size(*dims)
    try:
        with Image.open(path) as im:
            check_header_size(*im.size)
            im.load()
            arr = _from_pil(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1))} pixels" if found else "too many pixels"
        raise ImageError(f"header declares {size} (over the {MAX_PIXELS // 1_000_000} MP limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        if kind == "TIFF" and isinstance(exc, (UnidentifiedImageError, OSError)):
            return finish(_read_tifffile(path))
        raise ImageError(f"truncated or corrupt {kind} ({describe(exc)})") from None
    return finish(arr)
