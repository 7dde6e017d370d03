"""The image index next to the result store: a warm run whose results are all stored decodes no
image; a changed file or a new reader version is read again; a damaged index is rebuilt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from miqa_checks.config import resolve_settings
from miqa_checks.data import index as index_mod
from miqa_checks.data import samples
from miqa_checks.data.index import INDEX_NAME, ImageIndex, pixel_digest
from miqa_checks.data.lazy import Candidate, choose
from miqa_checks.engine import Engine
from miqa_checks.engine.store import ResultStore
from miqa_checks.matrix import plan_cells


class Decodes:
    """Counts the embedded samples' file decodes (``samples._whole``), caches cleared."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        original = samples._whole.__wrapped__

        def counted(package: str, name: str, part: str) -> np.ndarray:
            self.files.append(name)
            return original(package, name, part)

        samples.sample_image.cache_clear()
        monkeypatch.setattr(samples, "_whole", counted)

    def reset(self) -> None:
        samples.sample_image.cache_clear()
        self.files.clear()


def _audit(folder: Path) -> tuple[Engine, list]:
    settings = resolve_settings({"model": ["sim-robust"], "max_images": 4, "cache": str(folder)})
    engine = Engine(settings, store=ResultStore(folder, "run"), progress=False)
    cells = [c for c in plan_cells(["sim-robust"], [("samples_ct", "CT"), ("samples_us", "ultrasound")], with_baseline=False)
             if c.property in ("corruption_stability", "metadata_invariance")]
    engine.prepare(cells)
    for cell in cells:
        engine.lookup_for(cell)
    return engine, cells


def test_a_warm_engine_decodes_no_image(tmp_path, monkeypatch):
    decodes = Decodes(monkeypatch)
    cold, _ = _audit(tmp_path)
    assert cold.inferred > 0 and decodes.files  # cold: images decoded and scored
    assert (tmp_path / INDEX_NAME).is_file()
    decodes.reset()
    warm, _ = _audit(tmp_path)
    assert warm.inferred == 0
    assert decodes.files == []  # every key came from the index: no image decoded
    assert warm.score_rows() == cold.score_rows() and warm.result_errors() == cold.result_errors()
    assert warm.groups("samples_ct") == cold.groups("samples_ct")
    cold.close(), warm.close()


def test_a_changed_sample_file_is_read_again(tmp_path, monkeypatch):
    """The index names each sample's file: a file whose content changed is decoded again (only its images)."""
    copies = tmp_path / "files"
    copies.mkdir()
    real = samples.sample_file

    def copied(sample):
        path = real(sample)
        target = copies / sample.name
        if path is not None and not target.exists():
            shutil.copyfile(path, target)
        return target if path is not None else None

    monkeypatch.setattr(samples, "sample_file", copied)
    decodes = Decodes(monkeypatch)
    first, _ = _audit(tmp_path / "store")
    used = {first.images.record("samples_ct", i).source.split(": ")[1].split(" ")[0] for i in first.image_ids("samples_ct")}
    victim = sorted(used)[0]
    with open(copies / victim, "ab") as f:
        f.write(b"\0")  # new content: its index entries no longer apply
    decodes.reset()
    second, _ = _audit(tmp_path / "store")
    assert set(decodes.files) == {victim}
    assert second.inferred == 0  # same pixels, so the same keys: everything still stored
    assert second.score_rows() == first.score_rows()
    first.close(), second.close()


def _files(tmp_path: Path, n: int = 4) -> list[Path]:
    out = []
    for k in range(n):
        path = tmp_path / f"img{k}.npy"
        np.save(path, np.full((16, 12), 10 * k + 1, dtype=np.uint8))
        out.append(path)
    return out


def _choose(paths: list[Path], folder: Path, decoded: list[str]):
    def decoder(path: Path):
        def decode() -> tuple[np.ndarray, str]:
            decoded.append(path.name)
            return np.load(path), ""
        return decode

    candidates = [Candidate(p.name, (p,), "npy", decoder(p)) for p in paths]
    index = ImageIndex(folder)
    chosen = choose("toy", "toy", candidates, index, max_images=3, seed=1)
    index.save()
    return chosen


def test_index_serves_unchanged_files_and_rereads_changed_ones(tmp_path):
    paths = _files(tmp_path)
    decoded: list[str] = []
    cold = _choose(paths, tmp_path, decoded)
    assert len(decoded) == 3 and [i.image_id for i in cold.images] == sorted(decoded)
    decoded.clear()
    warm = _choose(paths, tmp_path, decoded)
    assert decoded == []
    assert [(i.image_id, i.facts) for i in warm.images] == [(i.image_id, i.facts) for i in cold.images]
    assert [i.record().image.tolist() for i in warm.images] == [i.record().image.tolist() for i in cold.images]

    victim = tmp_path / warm.images[0].image_id
    np.save(victim, np.full((16, 12), 200, dtype=np.uint8))  # same size, new content
    decoded.clear()
    after = _choose(paths, tmp_path, decoded)
    assert decoded == [victim.name]
    assert after.images[0].facts.digest == pixel_digest(np.full((16, 12), 200, dtype=np.uint8)) != cold.images[0].facts.digest


def test_a_new_reader_version_reads_every_image_again(tmp_path, monkeypatch):
    paths = _files(tmp_path)
    decoded: list[str] = []
    _choose(paths, tmp_path, decoded)
    monkeypatch.setattr(index_mod, "reader_version", lambda: "another reader")
    decoded.clear()
    _choose(paths, tmp_path, decoded)
    assert len(decoded) == 3


@pytest.mark.parametrize("damage", [b"\x00garbage{", b'{"format": 1, "reader": "x"}', b"[]",
                                    "same reader, entries of the wrong type"])
def test_a_damaged_index_is_ignored_and_rebuilt(tmp_path, damage):
    paths = _files(tmp_path)
    decoded: list[str] = []
    cold = _choose(paths, tmp_path, decoded)
    path = tmp_path / INDEX_NAME
    if isinstance(damage, str):
        data = json.loads(path.read_text())
        data["images"] = {k: ["not a digest", -1, "x", 3] for k in data["images"]}
        data["files"] = {k: "?" for k in data["files"]}
        path.write_text(json.dumps(data))
    else:
        path.write_bytes(damage)
    decoded.clear()
    rebuilt = _choose(paths, tmp_path, decoded)
    assert len(decoded) == 3  # nothing served from the damaged index
    assert [i.facts for i in rebuilt.images] == [i.facts for i in cold.images]
    decoded.clear()
    _choose(paths, tmp_path, decoded)
    assert decoded == []  # rebuilt and written back
