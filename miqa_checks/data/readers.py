"""One file -> one uint8 image, whatever its format; the content must match the extension."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .validate import ImageError

MAX_FILE_BYTES = 2 * 1024**3
"""Files larger than this are refused without being read."""

EXTENSIONS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
    ".dcm": "DICOM", ".dicom": "DICOM", ".nii": "NIfTI", ".nii.gz": "NIfTI",
}
"""Recognised file extensions (lower case) and the format each promises."""


def extension(path: Path) -> str:
    """Lower-case extension, ``.nii.gz`` counted as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_candidate(path: Path) -> bool:
    """True for a recognised extension or no extension at all (possibly DICOM)."""
    ext = extension(path)
    return ext in EXTENSIONS or ext == ""


def sniff(head: bytes) -> str | None:
    """Format of a file from its first 352 bytes, None when unrecognised."""
    if head[128:132] == b"DICM":  # first: the 128-byte preamble may itself look like TIFF
        return "DICOM"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00",):
        return "NIfTI"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_image(path: Path) -> np.ndarray:
    """Read one image file -> uint8 H x W or H x W x 3; ImageError with a human reason otherwise.

    Multi-frame DICOM: the middle frame; NIfTI: the middle axial slice of the first volume.
    """
    return read_grouped(path, b"")[0]


def check_file(path: Path) -> None:
    """ImageError unless ``path`` may be opened: a recognised extension (or none), a regular file
    (reading a FIFO or device could block forever), 1 byte .. ``MAX_FILE_BYTES``. Reads nothing."""
    ext = extension(path)
    if ext and ext not in EXTENSIONS:
        raise ImageError(f"unsupported file type '{ext}' (not an image)")
    if not path.is_file():
        raise ImageError("not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError("zero-byte file")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"file is {size / 1024**3:.1f} GiB (over the {MAX_FILE_BYTES // 1024**3} GiB limit)")


def read_grouped(path: Path, salt: bytes) -> tuple[np.ndarray, str | None]:
    """``read_image`` plus the image's group when the file names one (a DICOM's patient or study,
    as a hash keyed with ``salt``), else None."""
    check_file(path)
    ext = extension(path)
    expected = EXTENSIONS.get(ext)
    with open(path, "rb") as fh:
        head = fh.read(352)
    found = sniff(head)
    if expected is None:  # no extension: only DICOM is accepted
        if found != "DICOM":
            raise ImageError("no extension and no DICOM 'DICM' preamble (not an image)")
        expected = "DICOM"
    if expected == "NIfTI" and ext == ".nii.gz" and found == "gzip":
        found = "NIfTI"
    if found != expected:
        if found is None:
            what = "a text file" if _looks_like_text(head) else "unrecognised content"
            raise ImageError(f"not a {expected} file ({what}, no {expected} signature)")
        raise ImageError(f"wrong extension: content is {found} but the name ends in '{ext}'")
    try:
        return _decode(path, expected, salt)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"out of memory while decoding this {expected} file") from None
    except Exception as exc:  # noqa: BLE001 - a reader bug or exotic corruption: still one bad file
        raise ImageError(f"unreadable {expected} file ({type(exc).__name__})") from None


def _decode(path: Path, kind: str, salt: bytes) -> tuple[np.ndarray, str | None]:
    """Dispatch to the reader of ``kind`` (content already checked) -> (image, group or None)."""
    if kind == "DICOM":
        from . import dicom

        return dicom.read_grouped(path, salt)
    if kind == "NIfTI":
        from . import nifti

        return nifti.read_image(path), None
    from . import raster

    return raster.read_image(path, kind), None
