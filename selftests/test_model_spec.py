"""The one ``--miqa-model`` parser (miqa_checks/judges/spec.py): kinds, labels, names, uniqueness.

Labels go into test ids, so they must be unique in a run, free of credentials, and free of the
ids users select with ``-k`` (corruptions, attributes, properties).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from miqa_checks.errors import MiqaUsageError
from miqa_checks.judges import REGISTRY, JudgeSettings, load_judge, parse_model_spec, validate_specs
from miqa_checks.judges.spec import KINDS, reserved_ids
from miqa_checks.matrix import model_label, plan_cells

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,kind,label", [
    ("tiny-llava", "tiny", "tiny-llava"),
    ("sim-paper", "sim", "sim-paper"),
    ("sim-robust", "sim", "sim-robust"),
    ("google/medgemma-4b-it", "hub", "google_medgemma-4b-it"),
    ("/abs/path/ckpt", "folder", "ckpt"),
    ("./runs/ckpt", "folder", "ckpt"),
    ("openai:http://127.0.0.1:8000/v1#qwen2-vl", "openai", "openai-qwen2-vl"),
    ("openai:http://h:1/v1#org/model-7b", "openai", "openai-org_model-7b"),
])
def test_existing_labels_are_unchanged(text, kind, label):
    spec = parse_model_spec(text)
    assert (spec.kind, spec.label, model_label(text)) == (kind, label, label)


def test_openai_url_ends_at_the_first_hash_for_label_and_request_alike():
    from miqa_checks.judges.openai_judge import OpenAIJudge

    text = "openai:http://h:1/v1#a#b"
    judge = load_judge(text, JudgeSettings())
    assert isinstance(judge, OpenAIJudge)
    assert judge._spec.base_url == "http://h:1/v1" and judge._spec.model == "a#b"
    assert model_label(text) == "openai-a_b"  # names the model that is requested, not "b"
    body = judge._body([], expected=False)
    assert body["model"] == "a#b"


def test_knob_specs_get_a_label_without_corruption_ids():
    text = "sim:pixelation=-13,seed=1"
    label = model_label(text)
    assert re.fullmatch(r"sim-[0-9a-f]{8}", label), label
    assert model_label("sim-paper:noise=0.1") != model_label("sim:noise=0.1")
    cells = plan_cells([text], [("samples_ct", "CT")], with_baseline=False)
    selected = [c for c in cells if "pixelation" in c.test_id.lower()]  # what `-k pixelation` matches
    assert selected and all(c.corruption == "pixelation" for c in selected), len(selected)


def test_generated_labels_avoid_reserved_ids():
    for text in ("org/contrast-vlm", "/models/zoom_blur_ft", "openai:http://h:1/v1#repeatability-bot"):
        label = model_label(text)
        assert not any(r in label.lower() for r in reserved_ids()), (text, label)


@pytest.mark.parametrize("text,name,kind,target", [
    ("baseline=sim:pixelation=-13", "baseline", "sim", "sim:pixelation=-13"),
    ("candidate=openai:http://h:1/v1#m", "candidate", "openai", "openai:http://h:1/v1#m"),
    ("new.v2=org/name", "new.v2", "hub", "org/name"),
    ("sim:pixelation=-13,seed=1", None, "sim", "sim:pixelation=-13,seed=1"),  # knobs, not NAME=SPEC
    ("sim-paper:noise=0.1", None, "sim", "sim-paper:noise=0.1"),
])
def test_name_equals_spec(text, name, kind, target):
    spec = parse_model_spec(text)
    assert (spec.name, spec.kind, spec.target) == (name, kind, target)
    assert spec.label == (name or spec.label)


def test_named_spec_loads_its_target():
    judge = load_judge("baseline=sim-paper", JudgeSettings())
    assert judge.spec == "sim-paper"
    assert model_label("baseline=sim-paper") == "baseline"


def test_a_named_spec_with_a_bad_target_says_what_is_wrong():
    with pytest.raises(MiqaUsageError, match="names no model"):
        parse_model_spec("cand=openai:http://h:1/v1")
    with pytest.raises(MiqaUsageError, match="contains the test id 'contrast'"):
        parse_model_spec("contrast_run=sim-paper")


def test_two_specs_with_one_label_are_refused_naming_both_without_secrets():
    a = "openai:http://user:s3cretpw@10.0.0.1:8000/v1#m"
    b = "openai:http://10.0.0.2:8000/v1#m"
    with pytest.raises(MiqaUsageError) as info:
        validate_specs([a, b])
    message = str(info.value)
    assert "10.0.0.1:8000" in message and "10.0.0.2:8000" in message and "'openai-m'" in message
    assert "s3cretpw" not in message and "user" not in message
    assert [s.label for s in validate_specs([f"a={a}", f"b={b}"])] == ["a", "b"]


def test_specs_with_secrets_or_control_characters():
    spec = parse_model_spec("openai:http://user:s3cretpw@127.0.0.1:9/v1#m")
    assert "s3cretpw" not in spec.label + spec.safe + repr(spec.safe_spec)
    with pytest.raises(MiqaUsageError) as info:
        parse_model_spec("openai:http://user:s3cretpw@127.0.0.1:9/v1")  # no model: the error quotes the spec
    assert "s3cretpw" not in str(info.value)
    with pytest.raises(MiqaUsageError, match="control characters") as info:
        parse_model_spec("org/na\x1b[31mme")
    assert "\x1b" not in str(info.value)


def test_every_kind_has_a_judge_and_dispatch_is_by_kind():
    assert set(REGISTRY) == set(KINDS)
    from miqa_checks.judges.openai_judge import OpenAIJudge
    from miqa_checks.judges.simulated import SimulatedJudge
    from miqa_checks.judges.transformers_judge import TransformersJudge

    settings = JudgeSettings(device="cpu")
    assert isinstance(load_judge("sim:noise=0.1", settings), SimulatedJudge)
    assert isinstance(load_judge("openai:http://h:1/v1#m", settings), OpenAIJudge)
    assert isinstance(load_judge("tiny-llava", settings), TransformersJudge)
    assert isinstance(load_judge("org/name", settings), TransformersJudge)


def test_judges_own_their_default_batch_size(monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "3")
    settings = JudgeSettings(device="cpu")
    assert load_judge("sim-paper", settings).default_batch_size == 256
    assert load_judge("openai:http://h:1/v1#m", settings).default_batch_size == 12
    assert load_judge("tiny-llava", settings).default_batch_size == 16


def _collect(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "tests"), "-p", "no:cacheprovider", "-q", "--collect-only",
         "--rootdir", str(REPO), "--miqa-report-dir", str(tmp_path / "r"), "--miqa-cache", str(tmp_path / "c"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def test_through_pytest_k_pixelation_selects_only_pixelation_cells(tmp_path):
    done = _collect(tmp_path, "--miqa-model", "sim:pixelation=-13,seed=1", "-k", "pixelation")
    ids = [line for line in done.stdout.splitlines() if "::test_" in line]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    unrelated = ("test_metadata", "test_paraphrase", "test_repeatability", "test_output_validity")
    assert ids and not [i for i in ids if i.split("::")[-1].startswith(unrelated)], len(ids)
    assert all("-pixelation" in i for i in ids), ids[:5]


def test_through_pytest_clashing_labels_are_a_usage_error(tmp_path):
    done = _collect(tmp_path, "--miqa-model", "openai:http://127.0.0.1:1/v1#m", "--miqa-model", "openai:http://127.0.0.2:1/v1#m")
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert "would both be labelled 'openai-m'" in done.stderr
