"""Hypothesis fuzzing of every reader: random bytes and mutated valid files.

The contract: a reader returns a valid uint8 image or raises ``ImageError`` (a source raises
``MiqaUsageError`` for a manifest that is not one); nothing else escapes, nothing hangs.
"""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.data import get_testdata_file

from miqa_checks.data import npz, readers, resolve_source
from miqa_checks.data.medimeta import parse_info
from miqa_checks.data.validate import MIN_SIDE, ImageError
from miqa_checks.errors import MiqaUsageError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # decoders warn loudly on garbage
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
WORKDIR = Path(tempfile.mkdtemp(prefix="miqa-fuzz-"))
_names = itertools.count()


def _write(data: bytes, suffix: str) -> Path:
    """A fresh file per example (caches key on path, so names are never reused)."""
    path = WORKDIR / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


def _assert_contract(path: Path) -> None:
    try:
        img = readers.read_image(path)
    except ImageError as exc:
        assert str(exc)
        return
    assert img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3))
    assert min(img.shape[:2]) >= MIN_SIDE


def _encoded(fmt: str) -> bytes:
    y, x = np.mgrid[0:24, 0:32]
    img = np.stack([(x * 8) % 256, (y * 10) % 256, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def _tiff16() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 50))
    return buf.getvalue()


def _nifti(gz: bool) -> bytes:
    img = nib.Nifti1Image(np.arange(16 * 12 * 4, dtype=np.int16).reshape(16, 12, 4), np.eye(4))
    path = WORKDIR / f"seed{next(_names)}.nii{'.gz' if gz else ''}"
    img.to_filename(path)
    return path.read_bytes()


VALID = {
    ".png": _encoded("PNG"),
    ".jpg": _encoded("JPEG"),
    ".bmp": _encoded("BMP"),
    ".tif": _tiff16(),
    ".dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes(),
    ".nii": _nifti(gz=False),
    ".nii.gz": _nifti(gz=True),
}
SUFFIXES = sorted(VALID) + [""]


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few bytes overwritten, a slice deleted or duplicated, or truncated."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "delete", "repeat"]))
        if not buf:
            break
        at = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del buf[at:]
        elif op == "delete":
            del buf[at:at + draw(st.integers(1, 64))]
        else:
            buf[at:at] = buf[at:at + draw(st.integers(1, 64))]
    return bytes(buf)


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(data, suffix):
    _assert_contract(_write(data, suffix))


@FUZZ
@given(data=st.binary(min_size=0, max_size=600), suffix=st.sampled_from(sorted(VALID)))
def test_valid_header_then_random_bytes(data, suffix):
    """Keep a real header (the first 400 bytes, more for DICOM) so parsers get past the magic."""
    keep = 1200 if suffix == ".dcm" else 400
    _assert_contract(_write(VALID[suffix][:keep] + data, suffix))


@pytest.mark.parametrize("suffix", sorted(VALID))
def test_mutated_valid_files(suffix):
    @FUZZ
    @given(data=mutated(VALID[suffix]))
    def run(data):
        _assert_contract(_write(data, suffix))

    run()


def _npz_bytes(compressed: bool) -> bytes:
    buf = io.BytesIO()
    images = np.arange(3 * 16 * 16 * 3, dtype=np.uint8).reshape(3, 16, 16, 3)
    (np.savez_compressed if compressed else np.savez)(buf, images=images, labels=np.arange(3))
    return buf.getvalue()


@FUZZ
@given(data=st.one_of(st.binary(max_size=1024), mutated(_npz_bytes(False)), mutated(_npz_bytes(True))))
def test_npz_reader(data):
    path = _write(data, ".npz")
    try:
        arr = npz.images(path)
    except ImageError:
        return
    assert arr.dtype == np.uint8 and arr.ndim in (3, 4)
    _ = np.array(arr[:1])  # the first image is readable


@FUZZ
@given(text=st.text(max_size=400))
def test_info_yaml_parser(text):
    assert isinstance(parse_info(text), dict)


@FUZZ
@given(rows=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=12), st.text(max_size=12)), max_size=6),
       header=st.sampled_from(["path,dataset,modality", "path,dataset", "PATH , Dataset,modality,image_id", ""]))
def test_manifest_parser(rows, header):
    folder = WORKDIR / f"m{next(_names)}"
    folder.mkdir()
    Image.fromarray(np.full((12, 12), 7, np.uint8)).save(folder / "a.png")
    body = io.StringIO()
    csv.writer(body).writerows(rows)
    (folder / "m.csv").write_text(header + "\n" + body.getvalue(), encoding="utf-8", errors="surrogatepass")
    try:
        source = resolve_source(str(folder / "m.csv"))
        for name, _ in source.dataset_names():
            ds = source.load(name, max_images=None, seed=0)
            assert all(r.image.dtype == np.uint8 for r in ds.records)
    except MiqaUsageError:
        pass


def _hdf5_bytes() -> bytes:
    import h5py

    path = WORKDIR / f"seed{next(_names)}.hdf5"
    with h5py.File(path, "w") as fh:
        fh["images"] = np.arange(3 * 16 * 16, dtype=np.uint8).reshape(3, 16, 16)
    return path.read_bytes()


HDF5 = _hdf5_bytes()


@settings(FUZZ, max_examples=40)
@given(data=st.one_of(st.binary(max_size=512), mutated(HDF5)))
def test_medimeta_hdf5_reader(data):
    folder = WORKDIR / f"h{next(_names)}"
    folder.mkdir()
    (folder / "info.yaml").write_text("id: fuzz\n")
    (folder / "images.hdf5").write_bytes(data)
    ds = resolve_source(str(folder)).load("fuzz", max_images=None, seed=0)
    assert ds.records or ds.errors
    assert all(r.image.dtype == np.uint8 for r in ds.records)
