"""Image sources -> ``Dataset`` (readable images as records, unreadable inputs as error records).

Importing this package is cheap: pydicom, nibabel, Pillow, h5py and scikit-image are imported
lazily by the readers. Sources:

- ``samples``: embedded real medical images (see SAMPLES.md),
- a MediMeta-C root (``<root>/<dataset>/<split>/clean.npz`` + corrupted npz files),
- a MedIMeta root or a single MedIMeta dataset folder (``info.yaml``),
- a folder of images (PNG, JPEG, TIFF, BMP, DICOM, NIfTI), one dataset per image subfolder,
- a manifest CSV with columns ``path, dataset, modality`` (optional ``image_id``, ``group``).

Bad input never crashes a run and never passes silently: every unreadable, truncated, empty,
mislabelled, too small (< 8 x 8), too large (> 50 MP, or > 1 GiB decoded per file, from the
header), NaN / inf-valued, linked from outside its source or otherwise unusable input becomes an
``ErrorRecord`` (file relative to the source, human
reason). 16-bit, float, RGBA, CMYK and palette images are converted, not refused. A dataset
may end up with no image (its errors say why); a source with no image at all is a
``MiqaUsageError`` from ``load_all``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import MiqaUsageError
from ..records import ErrorRecord, ImageRecord

__all__ = ["Dataset", "Source", "resolve_source", "load_all"]


@dataclass
class Dataset:
    """The images of one dataset and the inputs that could not be used.

    precorrupted: (image_id, corruption, severity) -> the published corrupted uint8 image,
        None when that file is missing (MediMeta-C only).
    """

    name: str
    modality: str
    records: list[ImageRecord]
    errors: list[ErrorRecord] = field(default_factory=list)
    precorrupted: Callable[[str, str, int], np.ndarray | None] | None = None


class Source(Protocol):
    """Where images come from. ``dataset_names`` is cheap (no pixel decoding)."""

    spec: str

    def dataset_names(self) -> list[tuple[str, str]]:
        """[(dataset id, modality text)] in a stable order."""
        ...

    def load(self, dataset: str, *, max_images: int | None, seed: int) -> Dataset:
        """Read one dataset (at most ``max_images`` good images, chosen from ``seed``)."""
        ...

    # Optional: ``candidates(dataset) -> list[data.lazy.Candidate]``, every image the dataset could
    # take, listed without decoding; a source that has it is loaded lazily (``data.lazy``).


def resolve_source(spec: str) -> Source:
    """``--miqa-data`` value -> a Source; MiqaUsageError naming ``spec`` when none fits."""
    from . import folder, manifest, medimeta, medimeta_c

    if spec.strip().lower() == "samples":
        from .samples import SamplesSource

        return SamplesSource()
    path = Path(spec).expanduser()
    if not path.exists():
        raise MiqaUsageError(f"--miqa-data {spec!r}: no such file or folder (expected 'samples', a folder or a .csv manifest)")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return manifest.ManifestSource(spec)
        raise MiqaUsageError(f"--miqa-data {spec!r}: a single file is not a source (give its folder or a .csv manifest)")
    if medimeta_c.is_medimeta_c(path):
        return medimeta_c.MediMetaCSource(spec)
    if medimeta.is_medimeta(path):
        return medimeta.MedIMetaSource(spec)
    if folder.has_images(path):
        return folder.FolderSource(spec)
    raise MiqaUsageError(
        f"--miqa-data {spec!r}: not a recognisable source (no MediMeta-C npz files, no MedIMeta info.yaml, "
        "no PNG/JPEG/TIFF/BMP/DICOM/NIfTI files)"
    )


def load_all(specs: list[str], *, max_images: int | None, seed: int) -> list[Dataset]:
    """Load every dataset of every source, in order; MiqaUsageError when a source yields no image
    or two sources define the same dataset id."""
    from .index import ImageIndex
    from .lazy import load_lazy

    return [d.dataset() for d in load_lazy(specs, max_images=max_images, seed=seed, index=ImageIndex(None))]
