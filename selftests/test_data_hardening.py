"""Data-layer hardening: symlinks out of a source, memory bombs, group ids, own temp files only."""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from miqa_checks.data import intensity, npz, readers, resolve_source, validate
from miqa_checks.data.folder import FolderSource
from miqa_checks.data.manifest import ManifestSource
from miqa_checks.data.medimeta import MedIMetaSource
from miqa_checks.data.medimeta_c import MediMetaCSource
from miqa_checks.data.samples import SamplesSource

sys.path.insert(0, str(Path(__file__).parent))
import bombs  # noqa: E402


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32), dtype=np.uint8)).save(path)


def _everything(source) -> tuple[list, list]:
    loaded = [source.load(name, max_images=None, seed=0) for name, _ in source.dataset_names()]
    return [r for d in loaded for r in d.records], [e for d in loaded for e in d.errors]


# ---------------------------------------------------------------- symlinks and odd paths


def test_folder_never_follows_links_out_of_the_source(tmp_path):
    outside = tmp_path / "outside"
    for i in range(3):
        _png(outside / f"private{i}.png", i)
    src = tmp_path / "src"
    _png(src / "ct" / "a.png")
    (src / "ct" / "to_outside").symlink_to(outside, target_is_directory=True)
    (src / "ct" / "secret.png").symlink_to(outside / "private0.png")
    (src / "root_link").symlink_to("/", target_is_directory=True)
    (src / "ct" / "loop1.png").symlink_to(src / "ct" / "loop2.png")
    (src / "ct" / "loop2.png").symlink_to(src / "ct" / "loop1.png")
    (src / "ct" / "inside.png").symlink_to(src / "ct" / "a.png")
    (src / "ct" / "up").symlink_to(src, target_is_directory=True)  # a link back up: listed once

    records, errors = _everything(FolderSource(str(src)))
    assert sorted(r.image_id for r in records) == ["ct/a.png", "ct/inside.png"]
    reasons = {e.file: e.reason for e in errors}
    assert reasons == {
        "root_link": "link leaves the source folder (not read)",
        "ct/to_outside": "link leaves the source folder (not read)",
        "ct/secret.png": "link leaves the source folder (not read)",
        "ct/loop1.png": "symlink loop (not read)",
        "ct/loop2.png": "symlink loop (not read)",
    }


def test_a_link_swapped_in_after_listing_is_not_read(tmp_path):
    outside = tmp_path / "outside.png"
    _png(outside)
    src = tmp_path / "src"
    _png(src / "a.png")
    _png(src / "b.png", 1)
    source = FolderSource(str(src))
    source.dataset_names()
    (src / "b.png").unlink()
    (src / "b.png").symlink_to(outside)
    records, errors = _everything(source)
    assert [r.image_id for r in records] == ["a.png"]
    assert [(e.file, e.reason) for e in errors] == [("b.png", "link leaves the source folder (not read)")]


def test_manifest_nul_byte_and_symlink_loop_are_error_records(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "loop_a.png").symlink_to(tmp_path / "loop_b.png")
    (tmp_path / "loop_b.png").symlink_to(tmp_path / "loop_a.png")
    (tmp_path / "m.csv").write_text(
        "path,dataset,modality\ngood.png,ds,CT\nbad\x00name.png,ds,CT\nloop_a.png,ds,CT\n", encoding="utf-8"
    )
    records, errors = _everything(ManifestSource(str(tmp_path / "m.csv")))
    assert [r.image_id for r in records] == ["good.png"]
    assert sorted((e.file, e.reason) for e in errors) == [
        ("loop_a.png", "row 4: symlink loop (not read)"),
        ("row 3", "row 3: path holds a NUL byte (not read)"),
    ]


# ---------------------------------------------------------------- memory bombs


def test_deflated_dicom_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "MAX_FILE_DECODED_BYTES", 4 * 1024**2)
    src = tmp_path / "src"
    src.mkdir()
    bombs.deflated_dicom(src / "bomb.dcm", 64 * 1024**2)  # 64 MiB of zeros, ~64 KiB on disk
    bombs.deflated_dicom(src / "small.dcm", 2 * 512 * 512 * 2)  # 1 MiB: under the limit, readable
    tracemalloc.start()
    records, errors = _everything(FolderSource(str(src)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r.image_id for r in records] == ["small.dcm"]
    assert [(e.file, e.reason) for e in errors] == [
        ("bomb.dcm", "deflated DICOM data set inflates to over 4 MiB (the per-file limit)")
    ]
    assert peak < 24 * 1024**2  # far below the 64 MiB the bomb inflates to


def test_dicom_pixel_data_over_the_per_file_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "MAX_FILE_DECODED_BYTES", 16 * 1024)
    with pytest.raises(validate.ImageError, match=r"DICOM pixel data \(all frames\) would decode to 32 KiB \(over the 16 KiB per-file limit\)"):
        readers.read_image(Path(get_testdata_file("CT_small.dcm")))  # 128 x 128 x 2 bytes = 32 KiB


def test_gzipped_nifti_first_volume_over_the_limit_is_refused(tmp_path, monkeypatch):
    import nibabel as nib

    nib.Nifti1Image(np.zeros((64, 64, 16), np.float32), np.eye(4)).to_filename(tmp_path / "v.nii.gz")
    assert readers.read_image(tmp_path / "v.nii.gz").shape == (64, 64)
    monkeypatch.setattr(validate, "MAX_FILE_DECODED_BYTES", 128 * 1024)
    with pytest.raises(validate.ImageError, match="gzipped NIfTI first volume would decode"):
        readers.read_image(tmp_path / "v.nii.gz")


def test_npz_rows_are_streamed_not_materialised(tmp_path):
    root = bombs.zeros_npz(tmp_path, 1200)  # declares 1200 x 224 x 224 x 3 = 172 MiB, ~170 KiB on disk
    tracemalloc.start()
    ds = MediMetaCSource(str(root)).load("zeros", max_images=4, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(ds.records) == 4 and not ds.errors
    assert all(r.image.shape == (224, 224) and not r.image.any() for r in ds.records)
    assert peak < 48 * 1024**2  # a whole-array load holds 172 MiB


def test_npz_rows_match_numpy_and_a_short_stream_is_an_error(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 16, 12, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "c.npz", images=images)
    rows = npz.images(tmp_path / "c.npz")
    assert len(rows) == 7 and rows.shape == images.shape
    got = rows.take([5, 1, 6])
    assert sorted(got) == [1, 5, 6] and all(np.array_equal(got[i], images[i]) for i in got)
    assert np.array_equal(rows[2:4], images[2:4]) and np.array_equal(rows[3], images[3])
    root = bombs.zeros_npz(tmp_path / "short", 50)
    clean = root / "zeros" / "test" / "clean.npz"
    import zipfile

    with zipfile.ZipFile(clean) as zf:
        data = zf.read("images.npy")
    with zipfile.ZipFile(clean, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images.npy", data[: len(data) // 2])  # header still declares 50 rows
    ds = MediMetaCSource(str(root)).load("zeros", max_images=2, seed=0)
    assert ds.records == [] and "truncated npz" in ds.errors[0].reason


def test_16_bit_windowing_never_holds_a_float_copy_of_the_image():
    img = (np.arange(3000 * 3000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(3000, 3000)
    expected_low, expected_high = np.percentile(img.astype(np.float64), intensity.PERCENTILES)
    tracemalloc.start()
    out = intensity.to_uint8(img)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < img.size * 8  # one float64 copy of the image is 72 MB
    assert np.array_equal(out, intensity.apply_window(img, expected_low, expected_high))
    assert intensity.percentile_bounds(img) == (float(expected_low), float(expected_high))


# ---------------------------------------------------------------- groups


def test_sample_groups_follow_their_source_file():
    source = SamplesSource()
    by_id = {}
    for name, _ in source.dataset_names():
        by_id.update({r.image_id: r.group for r in source.load(name, max_images=None, seed=0).records})
    assert {g for i, g in by_id.items() if i.startswith("retina#")} == {"retina"}
    assert len([i for i in by_id if i.startswith("retina#")]) == 9
    assert {g for i, g in by_id.items() if i.startswith("examples_ybr_color.dcm#f")} == {"examples_ybr_color.dcm"}
    assert {g for i, g in by_id.items() if i.startswith("example4d.nii.gz#z")} == {"example4d.nii.gz"}
    assert by_id["CT_small.dcm"] == "CT_small.dcm" and by_id["microaneurysms"] == "microaneurysms"
    files = {i.split("#")[0] for i in by_id}
    assert len(set(by_id.values())) == len(files)


def test_manifest_group_column_is_honoured(tmp_path):
    for name in ("a", "b", "c", "d"):
        _png(tmp_path / f"{name}.png", ord(name))
    (tmp_path / "m.csv").write_text(
        "path,dataset,modality,group\na.png,ds,CT,P-001\nb.png,ds,CT,P-001\nc.png,ds,CT,P-002\nd.png,ds,CT,\n",
        encoding="utf-8",
    )
    records, errors = _everything(ManifestSource(str(tmp_path / "m.csv")))
    group = {r.image_id: r.group for r in records}
    assert not errors and group["a.png"] == group["b.png"] != group["c.png"]
    assert group["d.png"] == "d.png"  # no group: its own
    assert "P-00" not in group["a.png"] + group["c.png"]


def _marked_dicom(path: Path, patient: str | None, study: str | None, shift: int) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for key, value in (("PatientID", patient), ("StudyInstanceUID", study)):
        if value is None:
            del ds[key]
        else:
            setattr(ds, key, value)
    ds.PixelData = np.roll(ds.pixel_array, shift, axis=1).astype(ds.pixel_array.dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


def test_dicom_group_is_a_keyed_hash_of_patient_then_study(tmp_path):
    src = tmp_path / "study"
    _marked_dicom(src / "p1_a.dcm", "ZQX-PATIENT-1", "1.2.3.444", 1)
    _marked_dicom(src / "p1_b.dcm", "ZQX-PATIENT-1", "1.2.3.555", 2)
    _marked_dicom(src / "p2.dcm", "ZQX-PATIENT-2", "1.2.3.444", 3)
    _marked_dicom(src / "study_only_a.dcm", None, "1.2.3.999", 4)
    _marked_dicom(src / "study_only_b.dcm", None, "1.2.3.999", 5)
    _marked_dicom(src / "neither.dcm", None, None, 6)
    records, errors = _everything(FolderSource(str(src)))
    group = {r.image_id: r.group for r in records}
    assert not errors and len(group) == 6
    assert group["p1_a.dcm"] == group["p1_b.dcm"] != group["p2.dcm"]
    assert group["p1_a.dcm"].startswith("patient-") and group["study_only_a.dcm"].startswith("study-")
    assert group["study_only_a.dcm"] == group["study_only_b.dcm"]
    assert group["neither.dcm"] == "neither.dcm"
    assert not any(marker in g for g in group.values() for marker in ("ZQX", "PATIENT", "1.2.3"))
    other = tmp_path / "copy"
    other.mkdir()
    (other / "p1_a.dcm").write_bytes((src / "p1_a.dcm").read_bytes())
    (copied,), _ = _everything(FolderSource(str(other)))
    assert copied.group != group["p1_a.dcm"]  # keyed per source: not a public hash of the id
    (again,), _ = _everything(FolderSource(str(other)))
    assert again.group == copied.group  # stable across runs


def test_medimeta_annotation_patient_column_groups_images(tmp_path):
    import h5py

    folder = tmp_path / "derm"
    folder.mkdir()
    (folder / "info.yaml").write_text("id: derm\n", encoding="utf-8")
    with h5py.File(folder / "images.hdf5", "w") as fh:
        fh["images"] = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    (folder / "annotations.csv").write_text(
        "image_path,Patient_ID,label\nimages/000000.tiff,PX1,0\nimages/000001.tiff,PX1,1\n"
        "images/000002.tiff,PX2,0\nimages/000003.tiff,,1\n", encoding="utf-8"
    )
    records, errors = _everything(MedIMetaSource(str(folder)))
    group = {r.image_id: r.group for r in records}
    assert not errors
    assert group["all/000000"] == group["all/000001"] != group["all/000002"]
    assert group["all/000000"].startswith("patient-") and "PX" not in group["all/000000"]
    assert group["all/000003"] == "all/000003"


def test_images_without_group_information_are_their_own_group(tmp_path):
    _png(tmp_path / "x" / "one.png")
    _png(tmp_path / "x" / "two.png", 1)
    records, _ = _everything(resolve_source(str(tmp_path / "x")))
    assert [(r.image_id, r.group) for r in records] == [("one.png", "one.png"), ("two.png", "two.png")]


# ---------------------------------------------------------------- temp files


def test_stale_temp_cleanup_deletes_only_this_tools_temp_names(tmp_path, monkeypatch):
    import tempfile

    from miqa_checks import safe_io

    made = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(Path(name).name)
        return fd, name

    monkeypatch.setattr(safe_io.tempfile, "mkstemp", spy)
    safe_io.atomic_write_text(tmp_path / "scores.csv", "x")
    assert len(made) == 1 and safe_io.is_own_temp_name(made[0])
    own = tmp_path / made[0]
    others = [tmp_path / n for n in (".scores.csv.abc123.tmp", ".editor-swap.tmp", ".x.miqa-short.tmp", ".db.tmp")]
    for f in [own, *others]:
        f.write_text("x")
        os.utime(f, (time.time() - 3600,) * 2)
    assert safe_io.remove_stale_temp_files(tmp_path) == 1
    assert not own.exists() and all(f.exists() for f in others)


def test_medimeta_hdf5_chunk_over_the_limit_is_an_error_record(tmp_path, monkeypatch):
    import h5py

    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "info.yaml").write_text("id: big\n", encoding="utf-8")
    with h5py.File(folder / "images.hdf5", "w") as fh:  # one chunk holds all 64 images (48 KiB)
        fh.create_dataset("images", data=np.zeros((64, 16, 16, 3), np.uint8), chunks=(64, 16, 16, 3), compression="gzip")
    monkeypatch.setattr(validate, "MAX_FILE_DECODED_BYTES", 16 * 1024)
    records, errors = _everything(MedIMetaSource(str(folder)))
    assert records == []
    assert [(e.file, e.reason) for e in errors] == [
        ("big/images.hdf5", "one HDF5 chunk of 'images' would decode to 48 KiB (over the 16 KiB per-file limit)")
    ]
