"""A user's folder or manifest of image files through the image index: a warm run whose results
are all stored decodes no file; an edited, new or removed file and a new reader version are
handled; files are checked (links, type, size) before they are hashed; groups stay keyed hashes."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from miqa_checks.config import resolve_settings
from miqa_checks.data import index as index_mod
from miqa_checks.data import readers, resolve_source
from miqa_checks.data.index import INDEX_NAME, ImageIndex
from miqa_checks.data.lazy import load_lazy
from miqa_checks.engine import Engine
from miqa_checks.engine.store import ResultStore
from miqa_checks.matrix import plan_cells

NIFTI = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


class Reads:
    """Counts files decoded by the readers (``readers._decode``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        original = readers._decode

        def counted(path: Path, kind: str, salt: bytes):
            self.files.append(Path(path).name)
            return original(path, kind, salt)

        monkeypatch.setattr(readers, "_decode", counted)


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(path)


def _folder(root: Path) -> Path:
    """``root/scans``: PNGs, a JPEG, two DICOMs of one patient, a DICOM of another, a NIfTI."""
    scans = root / "scans"
    scans.mkdir(parents=True)
    for k in range(3):
        _png(scans / f"p{k}.png", k)
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(scans / "c.jpg")
    for name, patient in (("a.dcm", "PAT-1"), ("b.dcm", "PAT-1"), ("c.dcm", "PAT-2")):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID = patient
        if name == "b.dcm":
            ds.PixelData = bytes(reversed(ds.PixelData))
        ds.save_as(scans / name)
    shutil.copyfile(NIFTI, scans / "brain.nii")
    return scans


def _audit(data: str, store: Path) -> Engine:
    settings = resolve_settings({"model": ["sim-robust"], "data": [data], "cache": str(store)})
    engine = Engine(settings, store=ResultStore(store, "run"), progress=False)
    names = [(d.name, d.modality) for d in engine.images.load().values()]
    cells = [c for c in plan_cells(["sim-robust"], names, with_baseline=False)
             if c.property in ("corruption_stability", "metadata_invariance")]
    engine.prepare(cells)
    for cell in cells:
        engine.lookup_for(cell)
    return engine


def _datasets(source: str, store: Path):
    index = ImageIndex(store)
    loaded = load_lazy([source], max_images=None, seed=0, index=index)
    index.save()
    return {d.name: d for d in loaded}


def test_a_warm_folder_audit_decodes_no_file(tmp_path, monkeypatch):
    scans = _folder(tmp_path / "data")
    reads = Reads(monkeypatch)
    cold = _audit(str(scans), tmp_path / "store")
    assert cold.inferred > 0 and len(reads.files) == 8
    reads.files.clear()
    warm = _audit(str(scans), tmp_path / "store")
    assert reads.files == [] and warm.inferred == 0
    assert warm.score_rows() == cold.score_rows() and warm.result_errors() == cold.result_errors()
    groups = warm.groups("scans")
    assert groups == cold.groups("scans")
    by_id = dict(zip(warm.image_ids("scans"), (warm.images.group("scans", i) for i in warm.image_ids("scans"))))
    assert by_id["a.dcm"] == by_id["b.dcm"] != by_id["c.dcm"] and by_id["a.dcm"].startswith("patient-")
    assert by_id["p0.png"] == "p0.png"
    text = (tmp_path / "store" / INDEX_NAME).read_text()
    assert "PAT-1" not in text and "PAT-2" not in text and by_id["a.dcm"] in text  # only the keyed hash
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text  # no local path
    cold.close(), warm.close()


def test_a_warm_manifest_decodes_no_file_and_keeps_its_groups(tmp_path, monkeypatch):
    scans = _folder(tmp_path / "data")
    manifest = tmp_path / "data" / "m.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "dataset", "modality", "group"])
        writer.writerows([["scans/p0.png", "pics", "photo", "g1"], ["scans/p1.png", "pics", "photo", "g1"],
                          ["scans/a.dcm", "ct", "CT", ""], ["scans/b.dcm", "ct", "CT", ""], ["scans/missing.png", "ct", "CT", ""]])
    reads = Reads(monkeypatch)
    cold = _datasets(str(manifest), tmp_path / "store")
    assert sorted(reads.files) == ["a.dcm", "b.dcm", "p0.png", "p1.png"]
    reads.files.clear()
    warm = _datasets(str(manifest), tmp_path / "store")
    assert reads.files == []
    for name in ("pics", "ct"):
        assert [(i.image_id, i.group, i.facts) for i in warm[name].images] == \
               [(i.image_id, i.group, i.facts) for i in cold[name].images]
    assert [(e.file, e.reason) for e in warm["ct"].errors] == [("scans/missing.png", "file not found")]
    pics = [i.group for i in warm["pics"].images]
    assert pics[0] == pics[1] and pics[0].startswith("group-")
    assert warm["ct"].images[0].group == warm["ct"].images[1].group != "scans/a.dcm"
    # the pixels decoded later are the ones indexed
    assert [i.record().image.tobytes() for i in warm["ct"].images] == [i.record().image.tobytes() for i in cold["ct"].images]


def test_edited_new_and_removed_files(tmp_path, monkeypatch):
    scans = _folder(tmp_path / "data")
    store = tmp_path / "store"
    reads = Reads(monkeypatch)
    cold = _datasets(str(scans), store)["scans"]
    digests = {i.image_id: i.facts.digest for i in cold.images}

    _png(scans / "p0.png", 100)  # edited: new content, new mtime
    same = scans / "c.dcm"  # edited keeping its size and mtime (the last pixel): ctime still moves
    before = same.stat()
    data = bytearray(same.read_bytes())
    data[-1] ^= 0xFF
    same.write_bytes(bytes(data))
    os.utime(same, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert same.stat().st_size == before.st_size and same.stat().st_mtime_ns == before.st_mtime_ns
    (scans / "c.jpg").unlink()  # removed
    _png(scans / "new.png", 7)  # new
    reads.files.clear()
    after = _datasets(str(scans), store)["scans"]
    assert sorted(reads.files) == ["c.dcm", "new.png", "p0.png"]
    ids = [i.image_id for i in after.images]
    assert "c.jpg" not in ids and "new.png" in ids and after.errors == []
    facts = {i.image_id: i.facts.digest for i in after.images}
    assert facts["p0.png"] != digests["p0.png"]
    assert facts["p1.png"] == digests["p1.png"]
    reads.files.clear()
    _datasets(str(scans), store)
    assert reads.files == []


def test_a_new_reader_version_decodes_every_file_again(tmp_path, monkeypatch):
    scans = _folder(tmp_path / "data")
    reads = Reads(monkeypatch)
    _datasets(str(scans), tmp_path / "store")
    monkeypatch.setattr(index_mod, "reader_version", lambda: "another reader")
    reads.files.clear()
    _datasets(str(scans), tmp_path / "store")
    assert len(reads.files) == 8


def test_another_folder_with_the_same_files_gets_its_own_groups(tmp_path, monkeypatch):
    """The group key (from the source's path) is in the index key: a copied folder's DICOM groups
    are keyed with its own path, as a cold run gives them."""
    first = _folder(tmp_path / "one")
    second = tmp_path / "two" / "scans"
    shutil.copytree(first, second)
    store = tmp_path / "store"
    _datasets(str(first), store)
    indexed = _datasets(str(second), store)["scans"]
    plain = resolve_source(str(second)).load("scans", max_images=None, seed=0)
    assert [i.group for i in indexed.images] == [r.group for r in plain.records]


def test_files_are_checked_before_they_are_hashed(tmp_path, monkeypatch):
    """A FIFO (opening it could block), an oversized file or a link leaving the folder is an error
    record, and the index never opens it."""
    scans = _folder(tmp_path / "data")
    os.mkfifo(scans / "pipe.png")
    (tmp_path / "secret.png").write_bytes((scans / "p0.png").read_bytes())
    os.symlink(tmp_path / "secret.png", scans / "out.png")
    limit = max(p.stat().st_size for p in scans.iterdir() if p.is_file() and not p.is_symlink())
    monkeypatch.setattr(readers, "MAX_FILE_BYTES", limit)
    big = scans / "big.png"
    big.write_bytes((scans / "p1.png").read_bytes())
    os.truncate(big, limit + 1)
    hashed: list[str] = []
    original = ImageIndex.content_hash

    def recorded(self, path):
        hashed.append(Path(path).name)
        return original(self, path)

    monkeypatch.setattr(ImageIndex, "content_hash", recorded)
    ds = _datasets(str(scans), tmp_path / "store")["scans"]
    reasons = {e.file: e.reason for e in ds.errors}
    assert reasons["pipe.png"] == "not a regular file"
    assert reasons["out.png"] == "link leaves the source folder (not read)"
    assert reasons["big.png"].startswith("file is ")
    assert not {"pipe.png", "out.png", "big.png", "secret.png"} & set(hashed)
    assert len(ds.images) == 8


def test_a_file_changed_or_removed_during_the_run_fails_its_requests_only(tmp_path):
    """Listed (and keyed) from the index, then edited or deleted before its pixels are needed: its
    requests fail with the reason, nothing is scored from pixels its keys do not describe, the
    other images are scored and the run goes on."""
    scans = _folder(tmp_path / "data")
    _datasets(str(scans), tmp_path / "store")  # the index knows every file
    settings = resolve_settings({"model": ["sim-robust"], "data": [str(scans)], "cache": str(tmp_path / "store")})
    engine = Engine(settings, store=ResultStore(tmp_path / "results", "run"), progress=False)
    names = [(d.name, d.modality) for d in engine.images.load().values()]
    listed = {i: engine.images.hash("scans", i) for i in engine.image_ids("scans")}
    _png(scans / "p0.png", 100)  # edited after it was listed
    (scans / "c.jpg").unlink()  # removed after it was listed
    cells = [c for c in plan_cells(["sim-robust"], names, with_baseline=False) if c.property == "corruption_stability"]
    engine.prepare(cells)
    lookups = [engine.lookup_for(cell) for cell in cells]
    errors = engine.result_errors()
    assert errors and {e["stage"] for e in errors} == {"data"}
    assert {e["file_or_image"].split(" [")[0] for e in errors} == {"p0.png", "c.jpg"}
    reasons = {e["file_or_image"].split(" [")[0]: e["reason"] for e in errors}
    assert reasons["p0.png"] == ("source image unreadable: p0.png: its file changed since it was listed (pixels differ "
                                 "from the ones its requests were keyed with); rerun to audit the new file")
    assert reasons["c.jpg"].startswith("source image unreadable: c.jpg: ") and reasons["c.jpg"].endswith("(since it was listed)")
    for lookup, cell in zip(lookups, cells):
        for spec in cell.requests():
            for image_id in ("p1.png", "a.dcm"):
                assert lookup(spec, image_id).loss_stage() is None
            assert lookup(spec, "p0.png").loss_stage() == lookup(spec, "c.jpg").loss_stage() == "data"
    assert listed["p0.png"] == engine.images.hash("scans", "p0.png")  # keys stay those of the listing
    engine.close()
