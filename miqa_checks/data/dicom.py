"""DICOM files -> uint8 frames, with radiological intensity handling.

Patient fields never leave this module: error reasons are built from our own text, and any
exception message from pydicom is scrubbed of the file's patient / study identifiers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import intensity
from .validate import ImageError, check_header_size, describe, finish

PHI_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames",
    "PatientMotherBirthName", "ReferringPhysicianName", "InstitutionName", "InstitutionAddress",
    "AccessionNumber", "StudyID", "PerformingPhysicianName", "OperatorsName",
)
"""Identifying fields whose values are scrubbed from any message (none is ever copied to a record)."""

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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


def read(path: Path) -> Any:
    """Parse a DICOM file (pixels not decoded); ImageError when it is not DICOM or has no pixels."""
    import pydicom
    from pydicom.errors import InvalidDicomError

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
    return ds


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


def read_image(path: Path) -> np.ndarray:
    """A DICOM file -> one uint8 image (its middle frame when multi-frame)."""
    ds = read(path)
    return decode_frame(ds, frame_count(ds) // 2)
