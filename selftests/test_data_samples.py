"""Embedded samples, intensity handling and the import cost of ``miqa_checks.data``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset as DicomDataset

from miqa_checks.data import intensity, resolve_source
from miqa_checks.data.dicom import PHI_KEYWORDS, frame_to_uint8
from miqa_checks.data.samples import MAX_SIDE, MODALITIES, SAMPLE_FILES, SamplesSource, inventory

SAMPLES_MD = Path(__file__).resolve().parents[1] / "miqa_checks" / "data" / "SAMPLES.md"


@pytest.fixture(scope="module")
def samples() -> dict:
    source = resolve_source("samples")
    return {name: source.load(name, max_images=None, seed=0) for name, _ in source.dataset_names()}


def test_samples_cover_five_modalities_with_provenance(samples):
    assert len({ds.modality for ds in samples.values()}) >= 5
    for name, ds in samples.items():
        assert ds.errors == [], name
        assert ds.modality == MODALITIES[name]
        for rec in ds.records:
            assert rec.dataset == name and rec.modality == ds.modality
            assert rec.source and rec.licence, rec.image_id
            assert re.search(r"MIT|CC0", rec.licence)
            assert not rec.image_id.startswith("/") and "\\" not in rec.image_id


def test_sample_counts(samples):
    counts = {name: len(ds.records) for name, ds in samples.items()}
    for name in ("samples_ct", "samples_mr", "samples_us", "samples_fundus", "samples_microscopy"):
        assert counts[name] >= 8, counts
    assert max(counts["samples_ct"], counts["samples_mr"]) >= 16, counts
    assert counts == {name: len(items) for name, items in inventory().items()}


def test_sample_images_are_uint8_small_and_grey_stays_grey(samples):
    for ds in samples.values():
        for rec in ds.records:
            img = rec.image
            assert img.dtype == np.uint8
            assert img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)
            assert max(img.shape[:2]) <= MAX_SIDE and min(img.shape[:2]) >= 8
            assert img.std() > 1, f"{rec.image_id} is blank"
            if img.ndim == 3:
                assert not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]))
    assert all(r.image.ndim == 2 for r in samples["samples_ct"].records + samples["samples_mr"].records)
    assert samples["samples_us"].records[0].image.ndim == 3


def test_sample_ids_follow_the_naming_scheme(samples):
    ids = {r.image_id for ds in samples.values() for r in ds.records}
    assert {"CT_small.dcm", "example4d.nii.gz#z12", "retina#crop2", "examples_ybr_color.dcm#f3"} <= ids


def test_samples_are_cached_in_process(samples):
    again = SamplesSource().load("samples_ct", max_images=None, seed=0)
    assert all(a.image is b.image for a, b in zip(again.records, samples["samples_ct"].records))
    assert not again.records[0].image.flags.writeable


def test_samples_md_documents_the_inventory():
    text = SAMPLES_MD.read_text(encoding="utf-8")
    for name, items in inventory().items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))
        assert f"| {len(items)} |" in row, name
    for sample in SAMPLE_FILES:
        assert sample.name in text


def test_no_patient_field_reaches_a_record(samples):
    values = set()
    for sample in SAMPLE_FILES:
        if sample.package == "pydicom":
            ds = pydicom.dcmread(get_testdata_file(sample.name), stop_before_pixels=True)
            values |= {str(ds.get(k)) for k in PHI_KEYWORDS if len(str(ds.get(k) or "")) >= 3}
    assert values, "expected some identifying values in the test files"
    for ds in samples.values():
        for rec in ds.records:
            text = " ".join((rec.image_id, rec.source, rec.licence, rec.modality))
            assert not any(v in text for v in values), text


def test_max_images_is_deterministic(samples):
    source = SamplesSource()
    first = source.load("samples_mr", max_images=5, seed=7)
    second = source.load("samples_mr", max_images=5, seed=7)
    other = source.load("samples_mr", max_images=5, seed=8)
    ids = [r.image_id for r in first.records]
    assert ids == [r.image_id for r in second.records] == sorted(ids) and len(ids) == 5
    assert ids != [r.image_id for r in other.records]
    everything = sorted(r.image_id for r in samples["samples_mr"].records)
    order = np.random.default_rng(7).permutation(len(everything))
    assert ids == sorted(everything[i] for i in order[:5])


def test_import_is_cheap():
    code = (
        "import sys, miqa_checks.data\n"
        "from miqa_checks.data import resolve_source\n"
        "resolve_source('samples').dataset_names()\n"
        "heavy = [m for m in ('pydicom', 'nibabel', 'PIL', 'h5py', 'skimage', 'torch', 'tifffile') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- intensity ---------------------------------------------------------------------------------

def _mono(arr: np.ndarray, **fields) -> DicomDataset:
    ds = DicomDataset()
    ds.PhotometricInterpretation = fields.pop("PhotometricInterpretation", "MONOCHROME2")
    for key, value in fields.items():
        setattr(ds, key, value)
    return ds


def test_16bit_ramp_maps_monotonically_without_wrap():
    ramp = np.tile(np.arange(0, 65536, 16, dtype=np.uint16), (8, 1))
    out = intensity.to_uint8(ramp)
    row = out[0].astype(int)
    assert out.dtype == np.uint8 and row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)
    signed = np.tile(np.arange(-32768, 32768, 16, dtype=np.int16), (8, 1))
    assert np.all(np.diff(intensity.to_uint8(signed)[0].astype(int)) >= 0)
    floats = np.linspace(-1e6, 1e6, 4096).reshape(8, 512)
    assert np.all(np.diff(intensity.to_uint8(floats).ravel().astype(int)) >= 0)


def test_monochrome1_is_inverted():
    arr = np.tile(np.arange(0, 1024, 4, dtype=np.uint16), (16, 1))
    plain = frame_to_uint8(arr, _mono(arr))
    inverted = frame_to_uint8(arr, _mono(arr, PhotometricInterpretation="MONOCHROME1"))
    assert np.array_equal(inverted, 255 - plain)
    assert inverted[0, 0] == 255 and inverted[0, -1] == 0


def test_rescale_slope_intercept_and_window():
    stored = np.array([[0, 500, 520, 540, 1000, 2000]] * 8, dtype=np.uint16)
    # HU = 2 * stored - 1000 -> [-1000, 0, 40, 80, 1000, 3000]; window 40 / 80 -> [-0.5, 78.5]
    ds = _mono(stored, RescaleSlope="2", RescaleIntercept="-1000", WindowCenter=["40", "400"], WindowWidth=["80", "2000"])
    out = frame_to_uint8(stored, ds)[0]
    low, high = intensity.dicom_window_bounds(40, 80)
    expected = intensity.apply_window(np.array([-1000, 0, 40, 80, 1000, 3000], float), low, high)
    assert np.array_equal(out, expected)
    assert out[0] == 0 and out[-1] == 255 and 0 < out[2] < 255


def test_percentile_window_without_window_tags():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4096, (64, 64)).astype(np.uint16)
    arr[0, 0] = 65535  # one outlier must not squash the rest
    out = frame_to_uint8(arr, _mono(arr))
    assert out.std() > 50


def test_palette_and_ybr_become_rgb():
    from pydicom.pixels import convert_color_space, pixel_array

    from miqa_checks.data import dicom

    palette = dicom.read_image(Path(get_testdata_file("examples_palette.dcm")))
    assert palette.ndim == 3 and palette.shape[2] == 3
    path = get_testdata_file("examples_ybr_color.dcm")
    ds = dicom.read(Path(path))
    ours = dicom.decode_frame(ds, 3)
    raw = pixel_array(path, index=3, raw=True)
    assert np.array_equal(ours, convert_color_space(raw, "YBR_FULL", "RGB"))


def test_ct_window_gives_soft_tissue_contrast(samples):
    ct = next(r for r in samples["samples_ct"].records if r.image_id == "CT_small.dcm").image
    assert (ct == 0).mean() < 0.9 and ct.std() > 30
