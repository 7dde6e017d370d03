"""The embedded ``samples`` source: real medical images that install offline with pydicom,
nibabel and scikit-image (provenance table ``SAMPLE_FILES``, documented in SAMPLES.md).

2-D images are taken from volumes (axial slices), cine loops (frames) and large single images
(non-overlapping crops); the images taken from one file (its crops, frames or slices) share one
``group``, the file name. Each is windowed to uint8 (see ``intensity``) and resized with Pillow's
LANCZOS filter so that its longest side is at most ``MAX_SIDE`` px (aspect kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord, ImageRecord
from . import Dataset
from .lazy import Candidate
from .select import pick
from .validate import ImageError, finish

MAX_SIDE = 256
"""Longest side of an embedded sample after resizing, in pixels."""

MODALITIES = {
    "samples_ct": "CT",
    "samples_mr": "MR",
    "samples_us": "ultrasound",
    "samples_fundus": "fundus photography",
    "samples_microscopy": "microscopy",
    "samples_nm": "nuclear medicine",
}
"""Dataset id -> modality text for the prompt."""

PYDICOM_LICENCE = "MIT (pydicom test data)"
NIBABEL_LICENCE = "MIT (nibabel test data)"
SKIMAGE_LICENCE = "CC0 1.0 (scikit-image data)"


@dataclass(frozen=True)
class SampleFile:
    """One source file and the 2-D images taken from it.

    parts: "" (the whole image), "f<k>" (frame k), "z<k>" (axial slice k of the first volume),
        "crop<k>" (k-th tile, row-major, of a ``grid`` rows x cols split of the whole image).
    """

    dataset: str
    package: str
    name: str
    licence: str
    parts: tuple[str, ...] = ("",)
    grid: tuple[int, int] = (1, 1)
    note: str = ""


def _crops(n: int) -> tuple[str, ...]:
    return ("",) + tuple(f"crop{k}" for k in range(n))


SAMPLE_FILES: tuple[SampleFile, ...] = (
    SampleFile("samples_ct", "pydicom", "CT_small.dcm", PYDICOM_LICENCE, note="CT 128x128, NEMA WG04 CT1"),
    SampleFile("samples_ct", "pydicom", "693_J2KI.dcm", PYDICOM_LICENCE, _crops(4), (2, 2), "head CT 512x512, JPEG 2000"),
    SampleFile("samples_ct", "pydicom", "J2K_pixelrep_mismatch.dcm", PYDICOM_LICENCE, _crops(4), (2, 2),
               "head CT 512x512, JPEG 2000 lossless"),
    SampleFile("samples_mr", "pydicom", "MR_small.dcm", PYDICOM_LICENCE, note="MR 64x64, NEMA WG04 MR1"),
    SampleFile("samples_mr", "pydicom", "examples_overlay.dcm", PYDICOM_LICENCE, note="MR 300x484"),
    SampleFile("samples_mr", "nibabel", "anatomical.nii", NIBABEL_LICENCE,
               tuple(f"z{k}" for k in range(5, 20)), note="T1 MR 33x41x25"),
    SampleFile("samples_mr", "nibabel", "example4d.nii.gz", NIBABEL_LICENCE,
               tuple(f"z{k}" for k in range(2, 22)), note="EPI MR 128x96x24, first volume"),
    SampleFile("samples_us", "pydicom", "examples_rgb_color.dcm", PYDICOM_LICENCE, note="colour Doppler 240x320"),
    SampleFile("samples_us", "pydicom", "examples_palette.dcm", PYDICOM_LICENCE, note="PALETTE COLOR 350x800"),
    SampleFile("samples_us", "pydicom", "examples_ybr_color.dcm", PYDICOM_LICENCE,
               tuple(f"f{k}" for k in range(0, 30, 3)), note="YBR_FULL_422 cine loop, 30 frames"),
    SampleFile("samples_fundus", "scikit-image", "retina", SKIMAGE_LICENCE, _crops(9), (3, 3),
               "fundus photograph 1411x1411 (M. Häggström)"),
    SampleFile("samples_fundus", "scikit-image", "microaneurysms", SKIMAGE_LICENCE,
               note="HRF fundus detail, green channel, 102x102"),
    SampleFile("samples_microscopy", "scikit-image", "cell", SKIMAGE_LICENCE, _crops(9), (3, 3),
               "quantitative phase image of a cell, 660x550"),
    SampleFile("samples_nm", "pydicom", "JPEG2000.dcm", PYDICOM_LICENCE, _crops(4), (4, 1),
               "whole-body bone scintigraphy 1024x256, NEMA WG04 NM1"),
)
"""Provenance of every embedded sample: dataset, package, file, licence and the parts taken."""


def _resize(img: np.ndarray) -> np.ndarray:
    """Longest side <= MAX_SIDE (LANCZOS, aspect kept); smaller images unchanged."""
    from PIL import Image

    h, w = img.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return img
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def _crop(img: np.ndarray, grid: tuple[int, int], k: int) -> np.ndarray:
    """Tile k (row-major) of a rows x cols split (remainder pixels at the far edges dropped)."""
    rows, cols = grid
    th, tw = img.shape[0] // rows, img.shape[1] // cols
    r, c = divmod(k, cols)
    return img[r * th:(r + 1) * th, c * tw:(c + 1) * tw]


def _pydicom_path(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise ImageError(f"pydicom test file {name} is not installed")
    return str(path)


def _nibabel_path(name: str) -> str:
    import nibabel

    return os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", name)


@lru_cache(maxsize=None)
def _whole(package: str, name: str, part: str) -> np.ndarray:
    """The full-resolution uint8 image a part comes from (frame/slice decoded, before cropping)."""
    if package == "pydicom":
        from . import dicom

        ds = dicom.read(Path(_pydicom_path(name)))
        return dicom.decode_frame(ds, int(part[1:]) if part.startswith("f") else 0)
    if package == "nibabel":
        from . import nifti

        return nifti.read_slice(nifti.load(Path(_nibabel_path(name))), int(part[1:]))
    import skimage.data

    return finish(np.asarray(getattr(skimage.data, name)()))


@lru_cache(maxsize=None)
def sample_image(package: str, name: str, part: str, grid: tuple[int, int]) -> np.ndarray:
    """One embedded sample: uint8, longest side <= MAX_SIDE (read-only; cached in-process)."""
    whole = _whole(package, name, "" if part.startswith("crop") else part)
    img = _crop(whole, grid, int(part[4:])) if part.startswith("crop") else whole
    out = finish(_resize(np.ascontiguousarray(img)))
    out.setflags(write=False)
    return out


def image_id(sample: SampleFile, part: str) -> str:
    """``CT_small.dcm``, ``example4d.nii.gz#z12``, ``retina#crop2``."""
    return f"{sample.name}#{part}" if part else sample.name


def inventory() -> dict[str, list[tuple[str, SampleFile, str]]]:
    """Dataset id -> [(image_id, sample file, part)] for every embedded image."""
    out: dict[str, list[tuple[str, SampleFile, str]]] = {name: [] for name in MODALITIES}
    for sample in SAMPLE_FILES:
        out[sample.dataset] += [(image_id(sample, part), sample, part) for part in sample.parts]
    return out


def _ungrouped(package: str, name: str, part: str, grid: tuple[int, int]) -> tuple[np.ndarray, str]:
    """``sample_image`` as a candidate decodes it: (image, no group named by the file)."""
    return sample_image(package, name, part, grid), ""


def sample_file(sample: SampleFile) -> Path | None:
    """The file a sample is read from, found without importing its package; None if not found."""
    spec = find_spec({"scikit-image": "skimage"}.get(sample.package, sample.package))
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    if sample.package == "pydicom":
        path = root / "data" / "test_files" / sample.name
    elif sample.package == "nibabel":
        path = root / "tests" / "data" / sample.name
    else:
        path = next(iter(sorted((root / "data").glob(f"{sample.name}.*"))), root / "data" / sample.name)
    return path if path.is_file() else None


class SamplesSource:
    """Embedded real images (``--miqa-data samples``)."""

    spec = "samples"

    def dataset_names(self) -> list[tuple[str, str]]:
        return list(MODALITIES.items())

    def candidates(self, dataset: str) -> tuple[list[Candidate], list[ErrorRecord]]:
        """Every embedded image of ``dataset``, described without decoding it (no listing errors)."""
        if dataset not in MODALITIES:
            raise MiqaUsageError(f"--miqa-data samples has no dataset {dataset!r} (it has {sorted(MODALITIES)})")
        out = []
        for iid, sample, part in inventory()[dataset]:
            path = sample_file(sample)
            out.append(Candidate(
                iid, (path,) if path is not None else (), f"samples|{sample.package}|{sample.name}|{part}|{sample.grid}",
                partial(_ungrouped, sample.package, sample.name, part, sample.grid),
                source=f"{sample.package}: {sample.name}" + (f" {part}" if part else ""), licence=sample.licence,
                group=sample.name,
            ))
        return out, []

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        modality = MODALITIES[dataset]
        entries = {c.image_id: c for c in self.candidates(dataset)[0]}

        def load_one(iid: str) -> ImageRecord:
            c = entries[iid]
            return ImageRecord(iid, dataset, modality, c.decode()[0], source=c.source, licence=c.licence, group=c.group)

        records, errors = pick(list(entries), load_one, dataset=dataset, max_images=max_images, seed=seed)
        return Dataset(dataset, modality, records, errors)
