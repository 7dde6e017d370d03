"""Bad input and leaks, through the audit itself (``pytest tests --miqa-data ...``).

One run audits four sources at once with ``sim-robust``: the broken-file corpus as a folder and as
a manifest (selftests/broken_inputs.py), a DICOM study whose patient fields are unique marker
strings (good and broken files), and images named like spreadsheet formulas. Then:

- errors.csv names every bad file (relative to its source) with its reason; every readable file
  is scored (scores.csv);
- no file the run wrote (reports, log, the SQLite store and its WAL) holds a patient marker, the
  fake API key in the environment, or an absolute local path;
- formula-like cells are escaped.

Plus the safety switches through the audit: a checkpoint that asks for remote code, and one with
only pickled weights, become error verdicts naming ``--miqa-trust-remote-code``.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from broken_inputs import READABLE, build_broken_corpus
from campaign import audit_env, files_scanned, run_audit_env, scan_for

FAKE_KEY = "sk-miqaFAKEkey0123456789leakcheck"
MARKERS = {
    "PatientName": "Zqxmarker^Patientname",
    "PatientID": "ZQXID-771903",
    "PatientBirthDate": "18770412",
    "OtherPatientNames": "Zqxother^Name",
    "PatientAddress": "Zqx Marker Street 9",
}
FORMULA_NAMES = ("=HYPERLINK(1).png", "+cmd.png", "-2+3.png", "@SUM(A1).png")


def _dicom_study(folder):
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True)
    for i in range(6):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        for field, value in MARKERS.items():
            setattr(ds, field, value)
        ds.PixelData = np.roll(ds.pixel_array, 7 * i, axis=1).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"slice{i}.dcm")
    broken = pydicom.dcmread(folder / "slice0.dcm")
    del broken.PixelData
    broken.save_as(folder / "no_pixels.dcm")
    whole = (folder / "slice1.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(whole[: len(whole) // 3])
    return {"no_pixels.dcm": "without pixel data", "truncated.dcm": "DICOM"}


def _formula_folder(folder):
    from PIL import Image

    folder.mkdir(parents=True)
    y, x = np.mgrid[0:40, 0:48]
    for i, name in enumerate(FORMULA_NAMES):
        Image.fromarray(((x * (3 + i) + y * 2) % 256).astype(np.uint8)).save(folder / name)


@pytest.fixture(scope="module")
def bad_input_audit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    expect = build_broken_corpus(tmp / "corpus")
    dicom_expect = _dicom_study(tmp / "dicom_study")
    _formula_folder(tmp / "formula_cells")
    env = audit_env(MIQA_OPENAI_API_KEY=FAKE_KEY, OPENAI_API_KEY=FAKE_KEY)
    run = run_audit_env(
        tmp, "--miqa-model", "sim-robust", "--miqa-data", str(tmp / "corpus" / "images"),
        "--miqa-data", str(tmp / "corpus" / "manifest.csv"), "--miqa-data", str(tmp / "dicom_study"),
        "--miqa-data", str(tmp / "formula_cells"), "-k", "corruption_stability and pixelation-1",
        env=env, timeout=300,
    )
    return tmp, run, expect, dicom_expect


def test_every_bad_file_is_reported_and_every_good_one_scored(bad_input_audit):
    tmp, run, expect, dicom_expect = bad_input_audit
    assert run.returncode in (0, 1), run.output[-3000:]
    assert run.run_info["interrupted"] is False
    errors = run.csv("errors.csv")
    scored = {(r["dataset"], r["image_id"]) for r in run.scores if r["score"]}
    reported = {(e["dataset"], e["file_or_image"]): e["reason"] for e in errors if e["stage"] == "data"}
    # a manifest row with a bad dataset id is reported under that id
    reported.update({("corpus", f): r for (d, f), r in reported.items() if d in ("", "Not An Id!")})
    folder = {k.removeprefix("images/"): v for k, v in expect.items()
              if k.startswith("images/") and not k.startswith("images/for_")}
    manifest = {k: v for k, v in expect.items() if not k.startswith(("medimeta_c/", "manifest_"))}
    kinds = 0
    for dataset, wanted in (("images", folder), ("corpus", manifest), ("dicom_study", dicom_expect)):
        for name, keyword in wanted.items():
            if keyword == READABLE:
                assert (dataset, name) in scored, f"{dataset}/{name} was not scored"
            else:
                assert (dataset, name) in reported, f"{dataset}/{name} not in errors.csv"
                assert keyword.lower() in reported[(dataset, name)].lower(), reported[(dataset, name)]
                kinds += dataset != "corpus"
    assert kinds >= 15
    assert {(d, f"slice{i}.dcm") for d in ["dicom_study"] for i in range(6)} <= scored
    for e in errors:
        assert not e["file_or_image"].startswith("/") and str(tmp) not in e["reason"], e


def test_no_patient_field_key_or_local_path_in_any_output(bad_input_audit):
    tmp, run, _, _ = bad_input_audit
    outputs = [run.report_dir, tmp / "cache"]
    assert {"results.sqlite"} <= set(files_scanned(tmp / "cache"))
    assert {"errors.csv", "scores.csv", "matrix.csv", "junit.xml", "run.json", "summary.html"} <= set(files_scanned(run.report_dir))
    secrets = [*MARKERS.values(), FAKE_KEY]
    for folder in outputs:
        assert scan_for(folder, secrets) == []
    assert not any(s in run.output for s in secrets)  # the console log
    local = [str(tmp), str(tmp.resolve()), str(tmp.parent)]
    assert scan_for(run.report_dir, local) == []
    assert scan_for(tmp / "cache", local) == []


def test_formula_cells_are_escaped(bad_input_audit):
    _, run, _, _ = bad_input_audit
    with open(run.report_dir / "scores.csv", newline="", encoding="utf-8") as fh:
        raw_ids = {row["image_id"] for row in csv.DictReader(fh) if row["dataset"] == "formula_cells"}
    assert raw_ids == {"'" + name for name in FORMULA_NAMES}
    for name in ("scores.csv", "errors.csv", "matrix.csv"):
        with open(run.report_dir / name, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                for cell in row:
                    assert not cell[:1] in ("=", "+", "@") or _is_number(cell), (name, cell)
                    assert not cell.startswith("-") or _is_number(cell), (name, cell)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ unsafe checkpoints via the audit


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from miqa_checks.judges.tiny import tiny_checkpoint

    home = tmp_path_factory.mktemp("tiny-home")
    return tiny_checkpoint("tiny-qwen2vl", home)


@pytest.mark.parametrize("kind", ["remote_code", "pickled"])
def test_unsafe_checkpoint_is_an_error_verdict_without_the_opt_in(tmp_path, tiny_folder, kind):
    folder = tmp_path / f"{kind}-ckpt"
    shutil.copytree(tiny_folder, folder)
    if kind == "remote_code":
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.EvilModel"}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "modeling_evil.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').write('x')\n")
        expected = "auto_map"
    else:
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
        expected = "pickled"
    run = run_audit_env(tmp_path, "--miqa-model", str(folder), "--miqa-device", "cpu", "--miqa-max-images", "5",
                        "-k", "corruption_stability and samples_ct and pixelation-1", timeout=300)
    assert run.returncode == 1, run.output[-3000:]
    (row,) = run.matrix
    assert row["verdict"] == "error", row
    assert "--miqa-trust-remote-code" in row["reason"] and expected in row["reason"], row
    reasons = " ".join(e["reason"] for e in run.csv("errors.csv"))
    assert "--miqa-trust-remote-code" in reasons
    assert not (tmp_path / "RAN").exists()  # the checkpoint's code never ran
    assert scan_for(run.report_dir, [str(tmp_path)]) == []  # the checkpoint's absolute path stays out
