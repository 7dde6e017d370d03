"""DICOM files -> uint8 frames, with radiological intensity handling.

Patient fields never leave this module: error reasons are built from our own text, any
exception message from pydicom is scrubbed of the file's patient / study identifiers, and the
group of an image (``patient_group``) is a keyed hash of PatientID / StudyInstanceUID.

Memory: a deflated data set is inflated once, streaming and discarding, to measure it before
pydicom inflates it for real; a data set or pixel data (all frames) over
``MAX_FILE_DECODED_BYTES`` is refused before decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import groups, intensity, validate
from .validate import ImageError, check_decoded_bytes, check_header_size, describe, finish, size_text

PHI_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames",
    "PatientMotherBirthName", "ReferringPhysicianName", "InstitutionName", "InstitutionAddress",
    "AccessionNumber", "StudyID", "PerformingPhysicianName", "OperatorsName",
)
"""Identifying fields whose values are scrubbed from any message (none is ever copied to a record)."""

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_BYTES = {"PixelData": None, "FloatPixelData": 4, "DoubleFloatPixelData": 8}
"""Bytes per sample of each pixel element (None: from BitsAllocated)."""
_INFLATE_STEP = 4 * 1024**2
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _first(value: Any) -> float:
    """First value of a possibly multi-valued numeric element, as float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def scrub(message: str, ds: Any) -> str:
    """Remove identifying values (PHI_KEYWORDS) of ``ds`` from ``message``; cap its length."""
    for key in PHI_KEYWORDS:
        value = str(ds.get(key, "") or "") if ds is not None else ""
        if len(value) >= 2:
            message = message.replace(value, "<redacted>")
    return describe(RuntimeError(message), 160).removeprefix("RuntimeError: ")


def frame_count(ds: Any) -> int:
    """NumberOfFrames (1 when absent)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        raise ImageError(f"invalid NumberOfFrames {str(ds.get('NumberOfFrames'))[:20]!r}") from None


def _inflated_size(path: Path, limit: int) -> int:
    """Bytes a deflated data set inflates to, counted in steps of ``_INFLATE_STEP`` (nothing kept),
    stopping once over ``limit``; 0 when the file is not deflated."""
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as fh:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
        if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
            return 0
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while total <= limit and (chunk := fh.read(1024**2)):
            while chunk and total <= limit:
                total += len(inflater.decompress(chunk, _INFLATE_STEP))
                chunk = inflater.unconsumed_tail
    return total


def _check_pixel_bytes(ds: Any, rows: int, cols: int) -> None:
    """Refuse pixel data whose decoded size (all frames) is over the per-file limit."""
    key = next(k for k in PIXEL_KEYWORDS if k in ds)
    try:
        per_sample = _PIXEL_BYTES[key] or max(int(ds.get("BitsAllocated", 8) or 8), 1) / 8
        samples = max(int(ds.get("SamplesPerPixel", 1) or 1), 1)
    except (TypeError, ValueError):
        raise ImageError("DICOM with invalid BitsAllocated / SamplesPerPixel") from None
    check_decoded_bytes(float(rows) * cols * samples * per_sample * frame_count(ds), "DICOM pixel data (all frames)")


def read(path: Path) -> Any:
    """Parse a DICOM file (pixels not decoded); ImageError when it is not DICOM, has no pixels or
    would decode to more than the per-file limit."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    limit = validate.MAX_FILE_DECODED_BYTES
    try:
        inflated = _inflated_size(path, limit)
    except Exception as exc:  # noqa: BLE001 - a meta group pydicom cannot parse
        raise ImageError(f"truncated or corrupt DICOM ({type(exc).__name__})") from None
    if inflated > limit:
        raise ImageError(f"deflated DICOM data set inflates to over {size_text(limit)} (the per-file limit)")
    try:
        ds = pydicom.dcmread(path)
        for _ in ds.iterall():  # convert every lazily parsed element now, inside this try
            pass
    except InvalidDicomError:
        raise ImageError("not a DICOM file (no 'DICM' preamble)") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise ImageError(f"truncated or corrupt DICOM ({type(exc).__name__})") from None
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise ImageError("DICOM without pixel data")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception:  # noqa: BLE001
        raise ImageError("DICOM without valid Rows / Columns") from None
    check_header_size(cols, rows, frame_count(ds))
    _check_pixel_bytes(ds, rows, cols)
    return ds


def patient_group(ds: Any, salt: bytes) -> str | None:
    """Keyed hash of PatientID (else StudyInstanceUID), None when neither is set. The raw value
    never leaves this function."""
    for key, kind in (("PatientID", "patient"), ("StudyInstanceUID", "study")):
        value = str(ds.get(key, "") or "").strip()
        if value:
            return groups.hashed(kind, value, salt)
    return None


def frame_to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    """One decoded frame (rows x cols [x 3]) -> uint8 display image.

    Monochrome: rescale slope/intercept, then the first window centre/width when present,
    else the robust 0.5-99.5 % window; MONOCHROME1 inverted. PALETTE COLOR: the colour LUT.
    RGB / YBR (converted to RGB by pydicom when decoding): 8-bit kept, else percentile window.
    A VOI LUT Sequence or Modality LUT Sequence is not applied (window / percentile instead).
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in ds else 8
        top = float(2 ** (16 if bits > 8 else 8) - 1)
        return intensity.apply_window(rgb, 0.0, top)
    if arr.ndim == 3:
        if photometric.startswith("YBR_PARTIAL"):
            raise ImageError(f"unsupported photometric interpretation {photometric}")
        return intensity.to_uint8(arr)
    slope = _first(ds.get("RescaleSlope", 1) or 1)
    intercept = _first(ds.get("RescaleIntercept", 0) or 0)
    values = intensity.rescale(arr, slope, intercept) if (slope, intercept) != (1.0, 0.0) else arr
    window = None
    if ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        try:
            window = intensity.dicom_window_bounds(_first(ds.WindowCenter), _first(ds.WindowWidth))
        except (TypeError, ValueError):
            window = None
    img = intensity.to_uint8(values, window)
    if photometric == "MONOCHROME1":
        img = intensity.invert(img)
    return img


def decode_frame(ds: Any, index: int) -> np.ndarray:
    """Decode frame ``index`` of ``ds`` -> uint8 finished image (ImageError on failure)."""
    from pydicom.pixels import pixel_array

    n = frame_count(ds)
    if not 0 <= index < n:
        raise ImageError(f"frame {index} out of range (file has {n})")
    try:
        arr = pixel_array(ds, index=index)
    except Exception as exc:  # noqa: BLE001 - codec failures, truncated pixel data, ...
        raise ImageError(f"truncated or corrupt DICOM pixel data ({type(exc).__name__}: {scrub(str(exc), ds)})") from None
    try:
        img = frame_to_uint8(arr, ds)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - inconsistent LUT / window / rescale elements
        raise ImageError(f"DICOM pixel values could not be mapped ({type(exc).__name__}: {scrub(str(exc), ds)})") from None
    return finish(img)


def read_grouped(path: Path, salt: bytes) -> tuple[np.ndarray, str | None]:
    """A DICOM file -> (``read_image``'s image, ``patient_group`` keyed with ``salt``)."""
    ds = read(path)
    return decode_frame(ds, frame_count(ds) // 2), patient_group(ds, salt)


def read_image(path: Path) -> np.ndarray:
    """A DICOM file -> one uint8 image (its middle frame when multi-frame)."""
    ds = read(path)
    return decode_frame(ds, frame_count(ds) // 2)
