"""The medical corruption set in the audit matrix: planned per modality beside the protocol's seven,
each corruption with the properties its registry entry declares, not applicable where it cannot
apply, and validated on simulated judges (a robust judge passes, a planted defect is caught by
its own cells only)."""

from __future__ import annotations

import collections

import pytest

from audit_runner import PER_IMAGE, run_audit
from miqa_checks.conditions import REGISTRY, ids
from miqa_checks.config import resolve_settings
from miqa_checks.errors import MiqaUsageError
from miqa_checks.matrix import dataset_corruptions, plan_cells

SEVEN = ids("imagenet_c")
SAMPLES = [("samples_ct", "CT"), ("samples_us", "ultrasound"), ("samples_microscopy", "microscopy")]


def _plan(**cli):
    s = resolve_settings(cli)
    return plan_cells(["m"], SAMPLES, with_baseline=False, corruption_sets=s["corruption_sets"], mapping=s["corruption_mapping"])


def test_default_profile_adds_the_medical_set_by_modality_and_paper_keeps_the_seven():
    by_dataset = collections.defaultdict(set)
    for cell in _plan():
        if cell.corruption:
            by_dataset[cell.dataset].add(cell.corruption)
    assert all(set(SEVEN) <= found for found in by_dataset.values())
    assert "speckle_noise" in by_dataset["samples_us"] and "gamma_up" in by_dataset["samples_ct"]
    assert {"stain_deposit", "bubble"} <= by_dataset["samples_microscopy"]
    assert "stain_deposit" not in by_dataset["samples_us"] and "gamma_up" not in by_dataset["samples_us"]
    paper = {c.corruption for c in _plan(profile="paper") if c.corruption}
    assert paper == set(SEVEN)


def test_each_corruption_gets_the_properties_its_entry_declares():
    cells = _plan()
    for cell in cells:
        if cell.corruption:
            assert cell.property in REGISTRY[cell.corruption].properties, cell
    ct = {(c.property, c.corruption) for c in cells if c.dataset == "samples_ct"}
    assert ("corruption_stability", "gamma_up") in ct and ("severity_response", "gamma_up") not in ct
    assert ("no_inflation", "brightness_up") not in ct and ("severity_response", "contrast_down") in ct


def test_the_mapping_is_overridable_in_config():
    assert dataset_corruptions("ultrasound", ["imagenet_c", "medical"], {"ultrasound": ["jpeg_compression"]}) == (*SEVEN, "jpeg_compression")
    cells = _plan(corruption_mapping={"ultrasound": ["characters"]})
    assert {c.corruption for c in cells if c.dataset == "samples_us" and c.corruption} == {*SEVEN, "characters"}
    with pytest.raises(MiqaUsageError, match="unknown corruption"):
        resolve_settings({"corruption_mapping": {"ultrasound": ["no_such_thing"]}})
    with pytest.raises(MiqaUsageError, match="unknown corruption set"):
        resolve_settings({"corruption_sets": ["imagenet_c", "nope"]})


def test_every_degrading_corruption_has_a_floor_with_a_reason():
    from miqa_checks.profiles import DEFAULT, FALL_REQUIRED_REASONS

    for name in DEFAULT["fall_required_pct"]:
        assert "severity_response" in REGISTRY[name].properties, name
        assert FALL_REQUIRED_REASONS[name].startswith("floor:"), name


def test_robust_judge_passes_the_enlarged_matrix_and_a_planted_medical_defect_fails_its_cells_only(tmp_path):
    robust = run_audit(tmp_path, "--miqa-model=sim-robust", PER_IMAGE, report="robust", cache="c1")
    assert robust.returncode == 0, robust.output[-2000:]
    verdicts = collections.Counter(r["verdict"] for r in robust.matrix)
    assert verdicts["fail"] == verdicts["error"] == 0 and len(robust.matrix) > 1000
    # saturate needs colour; the embedded microscopy images are grey: not applicable, never an error
    na = [r for r in robust.matrix if r["verdict"] == "not_applicable"]
    assert na and all("saturate" in r["test_id"] and "does not apply" in r["reason"] for r in na)
    assert not [e for e in robust.csv("errors.csv") if "saturate" in e["file_or_image"]]

    planted = run_audit(tmp_path, "--miqa-model=sim:speckle_noise=-20", PER_IMAGE, report="planted", cache="c2")
    failing = {r["test_id"] for r in planted.matrix if r["verdict"] in ("fail", "error")}
    assert failing and all("-speckle_noise-" in t for t in failing)
    assert {t.split("[")[1].split("-")[2] for t in failing} >= {"samples_us"}
