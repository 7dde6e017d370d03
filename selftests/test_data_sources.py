"""MediMeta-C, MedIMeta, folder and manifest sources; selection; the broken-file corpus."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from miqa_checks.data import Dataset, load_all, resolve_source
from miqa_checks.data.folder import FolderSource
from miqa_checks.data.manifest import ManifestSource
from miqa_checks.data.medimeta import MedIMetaSource, parse_info
from miqa_checks.data.medimeta_c import MediMetaCSource
from miqa_checks.errors import MiqaUsageError

sys.path.insert(0, str(Path(__file__).parent))
from broken_inputs import GOOD, READABLE, build_broken_corpus  # noqa: E402


def _images(n: int, grey: bool, seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size, size, 1 if grey else 3), dtype=np.uint8)
    return np.repeat(base, 3, axis=3) if grey else base


def _png(path: Path, seed: int, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)).save(path)


# ---- MediMeta-C --------------------------------------------------------------------------------

@pytest.fixture()
def medimeta_c(tmp_path: Path) -> Path:
    root = tmp_path / "MediMeta-C"
    oct_dir, fundus_dir = root / "oct" / "test", root / "fundus" / "val"
    oct_dir.mkdir(parents=True)
    fundus_dir.mkdir(parents=True)
    np.savez(oct_dir / "clean.npz", images=_images(6, grey=True), labels=np.arange(6))
    np.savez(oct_dir / "pixelate_severity_3.npz", images=_images(6, grey=True, seed=3), labels=np.arange(6))
    noisy = _images(6, grey=True, seed=4)
    noisy[..., 1] ^= 1  # per-channel noise: no longer grey
    np.savez_compressed(oct_dir / "gaussian_noise_severity_1.npz", images=noisy, labels=np.arange(6))
    (oct_dir / "zoom_blur_severity_2.npz").write_bytes(b"PK\x03\x04 broken")
    np.savez(fundus_dir / "clean.npz", images=_images(4, grey=False), labels=np.arange(4))
    (root / "README.txt").write_text("not a dataset")
    return root


def test_medimeta_c_layout(medimeta_c):
    source = resolve_source(str(medimeta_c))
    assert isinstance(source, MediMetaCSource)
    assert source.dataset_names() == [("fundus", "fundus"), ("oct", "oct")]
    oct_ds = source.load("oct", max_images=None, seed=0)
    assert [r.image_id for r in oct_ds.records] == [f"test/{i:06d}" for i in range(6)]
    assert all(r.image.shape == (32, 32) and r.modality == "oct" for r in oct_ds.records)
    clean = np.load(medimeta_c / "oct" / "test" / "clean.npz")["images"]
    assert np.array_equal(oct_ds.records[2].image, clean[2, :, :, 0])
    assert "oct/test/clean.npz" in oct_ds.records[2].source and not oct_ds.records[2].source.startswith("/")
    fundus = source.load("fundus", max_images=None, seed=0)
    assert [r.image_id for r in fundus.records][0] == "val/000000" and fundus.records[0].image.shape == (32, 32, 3)


def test_medimeta_c_precorrupted_lookup(medimeta_c):
    ds = resolve_source(str(medimeta_c)).load("oct", max_images=None, seed=0)
    published = np.load(medimeta_c / "oct" / "test" / "pixelate_severity_3.npz")["images"]
    got = ds.precorrupted("test/000004", "pixelation", 3)
    assert np.array_equal(got, published[4, :, :, 0])  # pixelation -> pixelate_severity_3.npz, grey rule
    noisy = ds.precorrupted("test/000001", "gaussian_noise", 1)  # compressed npz, channels differ: RGB
    assert noisy.shape == (32, 32, 3)
    assert ds.precorrupted("test/000001", "brightness", 5) is None  # file missing
    assert ds.errors == []
    assert ds.precorrupted("test/000001", "zoom_blur", 2) is None  # corrupt: None + one error record
    assert ds.precorrupted("test/000002", "zoom_blur", 2) is None
    assert [(e.file, "corrupt npz" in e.reason) for e in ds.errors] == [("oct/test/zoom_blur_severity_2.npz", True)]


def test_medimeta_c_single_dataset_folder_and_corrupt_clean(medimeta_c):
    source = resolve_source(str(medimeta_c / "oct"))
    assert isinstance(source, MediMetaCSource) and source.dataset_names() == [("oct", "oct")]
    assert len(source.load("oct", max_images=2, seed=1).records) == 2
    (medimeta_c / "fundus" / "val" / "clean.npz").write_bytes(b"garbage")
    broken = resolve_source(str(medimeta_c)).load("fundus", max_images=None, seed=0)
    assert broken.records == [] and broken.errors[0].file == "fundus/val/clean.npz"


# ---- MedIMeta ----------------------------------------------------------------------------------

@pytest.fixture()
def medimeta(tmp_path: Path) -> Path:
    root = tmp_path / "MedIMeta"
    derm = root / "derm"
    (derm / "splits").mkdir(parents=True)
    (derm / "info.yaml").write_text(
        "id: derm\nname: 'Dermatoscopy'\ndomain: Dermatology  # comment\nlicense: CC BY 4.0\n"
        "tasks:\n  - task_name: disease\n    id: nested\n"
    )
    with h5py.File(derm / "images.hdf5", "w") as fh:
        fh["images"] = _images(10, grey=False)
    (derm / "splits" / "train.txt").write_text("\n".join(f"images/{i:06d}.tiff" for i in range(6)))
    (derm / "splits" / "test.txt").write_text("\n".join(f"images/{i:06d}.tiff" for i in (6, 7, 9)) + "\n")
    xray = root / "Chest-XRay"
    (xray / "images").mkdir(parents=True)
    (xray / "splits").mkdir()
    (xray / "info.yaml").write_text("name: chest x-ray\n")
    for i, img in enumerate(_images(5, grey=True)):
        tifffile.imwrite(xray / "images" / f"{i:06d}.tiff", img[:, :, 0])
    (xray / "splits" / "val.txt").write_text("1\n3\n4\n")
    return root


def test_medimeta_root(medimeta):
    source = resolve_source(str(medimeta))
    assert isinstance(source, MedIMetaSource)
    assert source.dataset_names() == [("chest_xray", "chest_xray"), ("derm", "derm")]
    derm = source.load("derm", max_images=None, seed=0)
    assert [r.image_id for r in derm.records] == ["test/000006", "test/000007", "test/000009"]
    with h5py.File(medimeta / "derm" / "images.hdf5") as fh:
        assert np.array_equal(derm.records[2].image, fh["images"][9])
    assert derm.records[0].licence == "CC BY 4.0" and derm.errors == []
    xray = source.load("chest_xray", max_images=None, seed=0)
    assert [r.image_id for r in xray.records] == ["val/000001", "val/000003", "val/000004"]
    assert xray.records[0].image.ndim == 2


def test_medimeta_single_folder_and_no_split(medimeta):
    (medimeta / "Chest-XRay" / "splits" / "val.txt").unlink()
    source = resolve_source(str(medimeta / "Chest-XRay"))
    assert source.dataset_names() == [("chest_xray", "chest_xray")]
    assert len(source.load("chest_xray", max_images=None, seed=0).records) == 5


def test_medimeta_corrupt_hdf5_is_an_error_record(medimeta):
    data = (medimeta / "derm" / "images.hdf5").read_bytes()
    (medimeta / "derm" / "images.hdf5").write_bytes(data[: len(data) // 2])
    ds = resolve_source(str(medimeta)).load("derm", max_images=None, seed=0)
    assert ds.records == [] and ds.errors[0].file == "derm/images.hdf5"
    assert "corrupt HDF5" in ds.errors[0].reason and str(medimeta) not in ds.errors[0].reason
    with pytest.raises(MiqaUsageError, match="no readable image"):
        load_all([str(medimeta / "derm")], max_images=None, seed=0)


def test_parse_info_reads_top_level_scalars():
    info = parse_info("id: oct\nname: \"OCT: retina\"\ninput_size: [1, 224, 224]\nnested:\n  id: x\n")
    assert info["id"] == "oct" and info["name"] == "OCT: retina" and "x" not in info.values()


# ---- folders -----------------------------------------------------------------------------------

def test_folder_with_image_subfolders(tmp_path):
    root = tmp_path / "My Data"
    for i in range(3):
        _png(root / "Chest X-Ray" / f"a{i}.png", i)
        _png(root / "knee" / "deep" / f"k{i}.png", 10 + i)
    (root / "docs").mkdir()
    (root / "docs" / "readme.md").write_text("hi")
    (root / "Chest X-Ray" / "labels.csv").write_text("x")
    (root / "Chest X-Ray" / ".hidden.png").write_bytes(b"")
    source = resolve_source(str(root))
    assert isinstance(source, FolderSource)
    assert source.dataset_names() == [("chest_x_ray", "chest_x_ray"), ("knee", "knee")]
    chest = source.load("chest_x_ray", max_images=None, seed=0)
    assert [r.image_id for r in chest.records] == ["Chest X-Ray/a0.png", "Chest X-Ray/a1.png", "Chest X-Ray/a2.png"]
    assert [(e.file, "unsupported file type" in e.reason) for e in chest.errors] == [("Chest X-Ray/labels.csv", True)]
    knee = source.load("knee", max_images=None, seed=0)
    assert knee.records[0].image_id == "knee/deep/k0.png" and knee.records[0].image.ndim == 2


def test_special_files_are_never_read(tmp_path):
    import os

    _png(tmp_path / "scans" / "ok.png", 0)
    os.mkfifo(tmp_path / "scans" / "pipe.png")  # reading it would block forever
    ds = resolve_source(str(tmp_path / "scans")).load("scans", max_images=None, seed=0)
    assert [r.image_id for r in ds.records] == ["ok.png"]
    assert [(e.file, e.reason) for e in ds.errors] == [("pipe.png", "not a regular file")]


def test_flat_folder_is_one_dataset(tmp_path):
    for i in range(2):
        _png(tmp_path / "CT-scans" / f"{i}.png", i)
    assert resolve_source(str(tmp_path / "CT-scans")).dataset_names() == [("ct_scans", "ct_scans")]


def test_unrecognisable_sources_name_the_path(tmp_path):
    with pytest.raises(MiqaUsageError, match="no-such-folder"):
        resolve_source(str(tmp_path / "no-such-folder"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(MiqaUsageError, match="empty"):
        resolve_source(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    with pytest.raises(MiqaUsageError, match="bad.*no readable image.*zero-byte"):
        load_all([str(tmp_path / "bad")], max_images=None, seed=0)


def test_load_all_refuses_duplicate_dataset_ids(tmp_path):
    _png(tmp_path / "a" / "scans" / "1.png", 1)
    _png(tmp_path / "b" / "scans" / "1.png", 2)
    with pytest.raises(MiqaUsageError, match="scans"):
        load_all([str(tmp_path / "a" / "scans"), str(tmp_path / "b" / "scans")], max_images=None, seed=0)
    loaded = load_all(["samples", "samples", str(tmp_path / "a")], max_images=2, seed=0)
    assert isinstance(loaded[0], Dataset) and [d.name for d in loaded][-1] == "scans"


# ---- manifests ---------------------------------------------------------------------------------

def _manifest(folder: Path, rows: list[str], header: str = "path,dataset,modality") -> Path:
    path = folder / "manifest.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_manifest_source(tmp_path):
    for i in range(3):
        _png(tmp_path / "img" / f"{i}.png", i)
    _png(tmp_path / "img" / "deep" / "x.png", 9)
    rows = ["img/0.png,chest,chest X-ray", "img/1.png,chest,chest X-ray", "img/deep/x.png,knee,knee MR",
            "img/2.png,chest,CT", "img/missing.png,knee,knee MR", "img/0.png,chest,chest X-ray"]
    source = resolve_source(str(_manifest(tmp_path, rows)))
    assert isinstance(source, ManifestSource)
    assert source.dataset_names() == [("chest", "chest X-ray"), ("knee", "knee MR")]
    chest = source.load("chest", max_images=None, seed=0)
    assert [r.image_id for r in chest.records] == ["img/0.png", "img/1.png"]
    reasons = {e.reason.split(": ", 1)[1] for e in chest.errors}
    assert any("conflicts" in r for r in reasons) and any("duplicate image_id" in r for r in reasons)
    knee = source.load("knee", max_images=None, seed=0)
    assert [r.image_id for r in knee.records] == ["img/deep/x.png"]
    assert [(e.file, e.reason) for e in knee.errors] == [("img/missing.png", "file not found")]


def test_manifest_image_id_column_and_missing_columns(tmp_path):
    _png(tmp_path / "a.png", 0)
    path = _manifest(tmp_path, ["a.png,ds,CT,case-1"], header="path,dataset,modality,image_id")
    assert resolve_source(str(path)).load("ds", max_images=None, seed=0).records[0].image_id == "case-1"
    path = _manifest(tmp_path, ["a.png,ds"], header="path,Dataset")
    with pytest.raises(MiqaUsageError, match="modality"):
        resolve_source(str(path)).dataset_names()
    path = _manifest(tmp_path, ["a.png"], header="file")
    with pytest.raises(MiqaUsageError, match="path, dataset, modality"):
        resolve_source(str(path)).dataset_names()


def test_manifest_paths_never_leave_its_folder(tmp_path):
    inner = tmp_path / "inner"
    _png(inner / "ok.png", 0)
    _png(tmp_path / "secret.png", 1)
    (inner / "link.png").symlink_to(tmp_path / "secret.png")
    rows = ["ok.png,ds,CT", "../secret.png,ds,CT", f"{tmp_path / 'secret.png'},ds,CT", "link.png,ds,CT",
            "sub/../../secret.png,ds,CT"]
    ds = resolve_source(str(_manifest(inner, rows))).load("ds", max_images=None, seed=0)
    assert [r.image_id for r in ds.records] == ["ok.png"]
    assert sorted(e.file for e in ds.errors) == ["../secret.png", "link.png", "row 4", "sub/../../secret.png"]
    assert all("leaves the manifest folder" in e.reason for e in ds.errors)
    assert not any(str(tmp_path) in e.file + e.reason for e in ds.errors)


def test_manifest_bad_dataset_ids_are_error_records(tmp_path):
    _png(tmp_path / "a.png", 0)
    source = resolve_source(str(_manifest(tmp_path, ["a.png,good,CT", "b.png,,CT", "c.png,Bad Id,CT"])))
    assert source.dataset_names() == [("good", "CT")]
    errors = source.load("good", max_images=None, seed=0).errors
    assert [e.file for e in errors] == ["b.png", "c.png"]
    assert "empty dataset id" in errors[0].reason and "unknown dataset id" in errors[1].reason
    with pytest.raises(MiqaUsageError, match="no usable dataset"):
        resolve_source(str(_manifest(tmp_path, ["b.png,,CT"]))).dataset_names()


# ---- selection ---------------------------------------------------------------------------------

def test_max_images_is_seeded_and_skips_unreadable_files(tmp_path):
    root = tmp_path / "mixed"
    for i in range(10):
        _png(root / f"good{i:02d}.png", i)
    for i in range(5):
        (root / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    source = resolve_source(str(root))
    for seed in range(6):
        ds = source.load("mixed", max_images=8, seed=seed)
        assert len(ds.records) == 8, seed
        ids = [r.image_id for r in ds.records]
        assert ids == sorted(ids)
        assert ids == [r.image_id for r in source.load("mixed", max_images=8, seed=seed).records]
        assert all(e.file.startswith("bad") for e in ds.errors)
    picks = {tuple(r.image_id for r in source.load("mixed", max_images=3, seed=s).records) for s in range(6)}
    assert len(picks) > 1
    assert len(source.load("mixed", max_images=None, seed=0).records) == 10


# ---- the broken-file corpus --------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("broken") / "corpus"
    return folder, build_broken_corpus(folder)


def test_corpus_has_many_kinds(corpus):
    _, expect = corpus
    assert len([k for k, v in expect.items() if v != READABLE]) >= 15
    assert set(GOOD) <= set(expect)


def _check(records, errors, expect: dict[str, str], prefix: str) -> None:
    for err in errors:
        assert "/tmp" not in err.reason and not err.file.startswith("/"), err
    wanted = {k.removeprefix(prefix): v for k, v in expect.items() if k.startswith(prefix)}
    loaded = {r.image_id for r in records}
    reported = {e.file: e.reason for e in errors}
    for name, keyword in wanted.items():
        if keyword == READABLE:
            assert name in loaded, f"{name} should load; error: {reported.get(name)}"
        else:
            assert name in reported, f"{name} was not reported"
            assert keyword.lower() in reported[name].lower(), (name, reported[name])
    for rec in records:
        assert rec.image.dtype == np.uint8 and rec.image.ndim in (2, 3)


def test_corpus_through_a_folder(corpus):
    folder, expect = corpus
    ds = resolve_source(str(folder / "images")).load("images", max_images=None, seed=0)
    _check(ds.records, ds.errors, {k: v for k, v in expect.items() if not k.startswith("images/for_")}, "images/")
    assert {e.file for e in ds.errors} == {k.removeprefix("images/") for k, v in expect.items()
                                           if k.startswith("images/") and v != READABLE and not k.startswith("images/for_")}


def test_corpus_through_the_manifest(corpus):
    folder, expect = corpus
    source = resolve_source(str(folder / "manifest.csv"))
    assert source.dataset_names() == [("corpus", "mixed")]
    ds = source.load("corpus", max_images=None, seed=0)
    manifest_keys = {k: v for k, v in expect.items() if not k.startswith(("medimeta_c/", "manifest_"))}
    _check(ds.records, ds.errors, manifest_keys, "")
    with pytest.raises(MiqaUsageError, match=expect["manifest_missing_columns.csv"]):
        resolve_source(str(folder / "manifest_missing_columns.csv")).dataset_names()


def test_corpus_ramp16_and_grey_stay_grey(corpus):
    folder, _ = corpus
    ds = resolve_source(str(folder / "images")).load("images", max_images=None, seed=0)
    by_id = {r.image_id: r.image for r in ds.records}
    ramp = by_id["ramp16.tif"][0].astype(int)
    assert ramp[0] == 0 and ramp[-1] == 255 and np.all(np.diff(ramp) >= 0)
    assert by_id["grey16.png"].ndim == 2 and by_id["good_grey.png"].ndim == 2
    assert by_id["rgba.png"].shape[2] == 3 and by_id["cmyk.jpg"].shape[2] == 3


def test_corpus_corrupt_npz(corpus):
    folder, expect = corpus
    with pytest.raises(MiqaUsageError, match="corrupt npz"):
        load_all([str(folder / "medimeta_c")], max_images=None, seed=0)
    ds = resolve_source(str(folder / "medimeta_c")).load("oct", max_images=None, seed=0)
    assert ds.errors[0].file == "oct/test/clean.npz".removeprefix("") and expect["medimeta_c/oct/test/clean.npz"] in ds.errors[0].reason
