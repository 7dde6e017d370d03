"""TransformersJudge on every tiny family: expected + generate scoring, embeddings, batch
invariance, safety refusals, fast failure for missing models, OOM halving, device choice."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from miqa_checks.errors import JudgeError, MiqaUsageError  # noqa: E402
from miqa_checks.judges import JudgeSettings, load_judge  # noqa: E402
from miqa_checks.judges.tiny import known_tiny_specs, tiny_checkpoint  # noqa: E402
from miqa_checks.judges.transformers_judge import TransformersJudge  # noqa: E402
from miqa_checks.prompts import build_prompt, prompt_ids  # noqa: E402
from miqa_checks.records import RequestMeta, ScoreRequest  # noqa: E402

SPECS = known_tiny_specs()
ROOT = Path(__file__).resolve().parents[1]
#: (H, W) per item: families whose processor resizes keep working with mixed sizes
SIZES = [(40, 50), (64, 30), (32, 32), (50, 50), (28, 70), (45, 45), (60, 40), (33, 57)]


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "miqa_home"  # shared with test_tiny_checkpoints.py
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def judge_for(home):
    """(spec, method) -> a loaded judge, one per session."""
    cache: dict[tuple[str, str], TransformersJudge] = {}

    def get(spec: str, method: str = "expected") -> TransformersJudge:
        key = (spec, method)
        if key not in cache:
            settings = JudgeSettings(method=method, device="cpu", home=home, max_new_tokens=6)
            cache[key] = load_judge(spec, settings)  # type: ignore[assignment]
        return cache[key]

    yield get
    for judge in cache.values():
        judge.close()


def _image(i: int, grey: bool | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(1000 * seed + i)
    h, w = SIZES[i % len(SIZES)]
    grey = bool(i % 2) if grey is None else grey
    return rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)


def _request(image: np.ndarray, i: int = 0, prompt_id: str = "base", embed: bool = False) -> ScoreRequest:
    return ScoreRequest(
        image=image,
        prompt=build_prompt("CT", prompt_id),
        meta=RequestMeta(dataset="d", modality="CT", image_id=str(i), prompt_id=prompt_id),
        embed=embed,
    )


def _batch(n: int = 8, embed: bool = False) -> list[ScoreRequest]:
    ids = prompt_ids()
    return [_request(_image(i), i, ids[i % len(ids)], embed) for i in range(n)]


# ---------------------------------------------------------------------------- every family


@pytest.mark.parametrize("spec", SPECS)
def test_expected_scores_grey_and_rgb(spec, judge_for, record_property):
    judge = judge_for(spec)
    t0 = time.perf_counter()
    grey = _request(_image(0, grey=True))
    rgb = _request(_image(0, grey=False))
    results = judge.score([grey, rgb])
    record_property("first_score_s", round(time.perf_counter() - t0, 3))
    assert len(results) == 2
    for res in results:
        assert res.error is None, res.error
        assert res.method == "expected" and res.parse_ok and res.raw_text == ""
        assert 1.0 <= res.score <= 5.0
        assert res.probs is not None and len(res.probs) == 5
        assert math.isclose(sum(res.probs), 1.0, abs_tol=1e-5)
        assert math.isclose(res.score, sum(p * k for p, k in zip(res.probs, range(1, 6))), abs_tol=1e-5)
    assert grey.image.ndim == 2  # the judge converts for the processor only


@pytest.mark.parametrize("spec", SPECS)
def test_different_images_give_different_scores_and_embeddings(spec, judge_for, record_property):
    judge = judge_for(spec)
    rng = np.random.default_rng(3)
    noisy = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    flat = np.full((48, 48, 3), 128, np.uint8)
    a, b = judge.score([_request(noisy, embed=True), _request(flat, embed=True)])
    record_property("score_diff", abs(a.score - b.score))
    assert a.score != b.score
    assert not np.allclose(a.embedding, b.embedding)
    assert not np.allclose(a.image_embedding, b.image_embedding)


@pytest.mark.parametrize("spec", SPECS)
def test_batch_of_8_equals_batch_of_1(spec, judge_for, record_property):
    """Mixed sizes, grey/RGB and prompts of different lengths: left padding must not move scores."""
    judge = judge_for(spec)
    requests = _batch(8, embed=True)
    together = judge.score(requests)
    alone = [judge.score([r])[0] for r in requests]
    errs = [abs(x.score - y.score) for x, y in zip(together, alone)]
    emb_err = max(float(np.abs(x.embedding - y.embedding).max()) for x, y in zip(together, alone))
    img_err = max(float(np.abs(x.image_embedding - y.image_embedding).max()) for x, y in zip(together, alone))
    record_property("max_batch_invariance_error", max(errs))
    record_property("max_embedding_invariance_error", emb_err)
    assert all(r.error is None for r in together + alone)
    assert max(errs) < 1e-3
    assert emb_err < 1e-2 and img_err < 1e-2


@pytest.mark.parametrize("spec", SPECS)
def test_embedding_shapes(spec, judge_for, record_property):
    judge = judge_for(spec)
    with_embed, without = judge.score([_request(_image(1), embed=True), _request(_image(2))])
    text_hidden = judge._model.config.get_text_config().hidden_size
    assert with_embed.embedding.dtype == np.float32 and with_embed.embedding.shape == (text_hidden,)
    assert with_embed.image_embedding.dtype == np.float32 and with_embed.image_embedding.ndim == 1
    assert np.isfinite(with_embed.embedding).all() and np.isfinite(with_embed.image_embedding).all()
    assert without.embedding is None and without.image_embedding is None
    record_property("embedding_shape", str(with_embed.embedding.shape))
    record_property("image_embedding_shape", str(with_embed.image_embedding.shape))


@pytest.mark.parametrize("spec", SPECS)
def test_generate_records_every_answer(spec, judge_for):
    judge = judge_for(spec, "generate")
    requests = [_request(_image(i), i, embed=(i == 0)) for i in range(3)]
    results = judge.score(requests)
    assert len(results) == 3
    for res in results:
        assert res.method == "generate" and res.error is None
        assert isinstance(res.raw_text, str) and res.raw_text != ""
        if res.parse_ok:
            assert math.isfinite(res.score)
        else:  # random weights rarely write "x/5": the failure is recorded, not dropped
            assert math.isnan(res.score)
    assert results[0].embedding is not None and results[0].image_embedding is not None
    assert results[1].embedding is None
    assert judge.identity().endswith("|generate-6|float32")


def test_expected_score_sums_every_digit_form(judge_for):
    """Level logits = logsumexp over all single-token forms of the digit ("1" and "Ġ1", ...)."""
    import torch

    judge = judge_for("tiny-llava")
    judge.score([_request(_image(0))])
    tok = judge._processor.tokenizer
    assert any(len(ids) > 1 for ids in judge._level_ids), "the tiny tokenizer has ' 1' and '1' forms"
    for k, ids in enumerate(judge._level_ids, start=1):
        assert all(tok.decode([i]).strip() == str(k) for i in ids)
    request = _request(_image(0))
    (res,) = judge.score([request])
    with torch.no_grad():
        logits = judge._model(**judge._inputs([request])).logits[0, -1].float()
    level = torch.stack([torch.logsumexp(logits[ids], 0) for ids in judge._level_ids])
    probs = torch.softmax(level, 0)
    assert np.allclose(res.probs, probs.numpy(), atol=1e-6)
    assert math.isclose(res.score, float((probs * torch.arange(1, 6)).sum()), abs_tol=1e-6)


def test_generate_parse_rule_applied(judge_for, monkeypatch):
    """Decoded text goes through the published parse rule; out-of-range values stay, flagged later."""
    judge = judge_for("tiny-llava", "generate")
    judge.score([_request(_image(0))])  # loaded
    tok = judge._processor.tokenizer
    answers = iter(["I rate it 4/5.", "7/10", "no idea"])

    def fake_batch_decode(ids, skip_special_tokens=True):
        return [next(answers) for _ in range(len(ids))]

    monkeypatch.setattr(tok, "batch_decode", fake_batch_decode)
    out = judge.score([_request(_image(i), i) for i in range(3)])
    assert (out[0].score, out[0].parse_ok) == (4.0, True)
    assert (out[1].score, out[1].parse_ok) == (7.0, True)
    assert math.isnan(out[2].score) and out[2].parse_ok is False and out[2].raw_text == "no idea"


# ---------------------------------------------------------------------------- identity, provenance


def test_identity_and_provenance_have_no_paths(judge_for, home):
    judge = judge_for("tiny-llava")
    ident = judge.identity()
    assert ident.startswith("tiny-llava@sha256=") and ident.endswith("|expected|float32")
    prov = judge.provenance()
    for key in ("model", "revision", "dtype", "device", "method", "transformers", "identity"):
        assert key in prov
    assert prov["device"] == "cpu" and prov["dtype"] == "float32"
    text = json.dumps(prov)
    assert str(home) not in text and "/tmp" not in text


def test_identity_follows_the_weights(home, tmp_path):
    folder = tiny_checkpoint("tiny-llava", home)
    copy = tmp_path / "my-ckpt"
    shutil.copytree(folder, copy)
    settings = JudgeSettings(device="cpu", home=home)
    first = TransformersJudge(str(copy), settings).identity()
    assert first.startswith("my-ckpt@sha256=") and str(tmp_path) not in first
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert TransformersJudge(str(copy), settings).identity() != first
    gen = TransformersJudge(str(copy), JudgeSettings(device="cpu", method="generate")).identity()
    assert "generate" in gen


def test_hf_id_found_in_the_local_cache(home, tmp_path, monkeypatch):
    """An HF id resolves from the local cache only; the snapshot hash is the revision."""
    import huggingface_hub.constants as hub_constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--miqa-test--tiny-vlm"
    shutil.copytree(tiny_checkpoint("tiny-idefics3", home), repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    judge = load_judge("miqa-test/tiny-vlm", JudgeSettings(device="cpu", home=home))
    assert judge.identity() == f"miqa-test/tiny-vlm@rev={revision}|expected|float32"
    (res,) = judge.score([_request(_image(0))])
    assert res.error is None and 1 <= res.score <= 5
    prov = judge.provenance()
    assert prov["model"] == "miqa-test/tiny-vlm" and prov["revision"] == revision
    assert str(tmp_path) not in json.dumps(prov)


def test_tiny_spec_without_factory_builds_itself(home):
    judge = TransformersJudge("tiny-gemma3", JudgeSettings(device="cpu", home=home))
    assert judge.identity().startswith("tiny-gemma3@sha256=")


def test_construction_is_cheap_and_imports_no_torch():
    code = (
        "import sys\n"
        "from miqa_checks.judges import load_judge, JudgeSettings\n"
        "j = load_judge('tiny-llava', JudgeSettings())\n"
        "j2 = load_judge('some-org/some-model', JudgeSettings())\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_unknown_tiny_spec_is_a_usage_error(home):
    with pytest.raises(MiqaUsageError, match="tiny-llava"):
        load_judge("tiny-nosuch", JudgeSettings(home=home))


def test_unknown_method_is_a_usage_error(home):
    with pytest.raises(MiqaUsageError):
        load_judge("tiny-llava", JudgeSettings(home=home, method="vibes"))


# ---------------------------------------------------------------------------- safety refusals


def _copy(home: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny_checkpoint("tiny-idefics3", home), dst)
    return dst


def test_remote_code_needs_the_opt_in(home, tmp_path):
    folder = _copy(home, tmp_path, "remote-code-ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('must never run')\n")
    judge = TransformersJudge(str(folder), JudgeSettings(device="cpu", home=home))
    with pytest.raises(JudgeError, match="--miqa-trust-remote-code") as info:
        judge.score([_request(_image(0))])
    assert "remote-code-ckpt" in str(info.value) and "auto_map" in str(info.value)


def test_unknown_model_type_needs_the_opt_in(home, tmp_path):
    folder = _copy(home, tmp_path, "odd-type-ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "miqa_custom_vlm"
    (folder / "config.json").write_text(json.dumps(config))
    judge = TransformersJudge(str(folder), JudgeSettings(device="cpu", home=home))
    judge.identity()  # naming it runs nothing; the refusal comes before any loading
    with pytest.raises(JudgeError, match="--miqa-trust-remote-code"):
        judge.score([_request(_image(0))])


def test_pickled_weights_are_refused_without_the_opt_in(home, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = _copy(home, tmp_path, "pickled-ckpt")
    state = load_file(str(folder / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    judge = TransformersJudge(str(folder), JudgeSettings(device="cpu", home=home))
    with pytest.raises(JudgeError, match="pickled") as info:
        judge.score([_request(_image(0))])
    assert "--miqa-trust-remote-code" in str(info.value)
    trusted = TransformersJudge(str(folder), JudgeSettings(device="cpu", home=home, trust_remote_code=True))
    (res,) = trusted.score([_request(_image(0))])
    assert res.error is None and 1 <= res.score <= 5


def test_missing_model_fails_fast_and_names_it(home):
    spec = "miqa-nonexistent-org/no-such-vlm-xyz"
    judge = load_judge(spec, JudgeSettings(device="cpu", home=home))
    t0 = time.perf_counter()
    with pytest.raises(JudgeError) as info:
        judge.score([_request(_image(0))])
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert spec in msg and "cache" in msg and "local" in msg


def test_missing_folder_fails_fast(home, tmp_path):
    judge = load_judge(str(tmp_path / "nowhere" / "ckpt"), JudgeSettings(device="cpu", home=home))
    t0 = time.perf_counter()
    with pytest.raises(JudgeError, match="does not exist") as info:
        judge.identity()
    assert time.perf_counter() - t0 < 10
    assert "'ckpt'" in str(info.value) and str(tmp_path) not in str(info.value)


# ---------------------------------------------------------------------------- failure isolation, OOM


def test_a_bad_item_fails_alone(judge_for):
    judge = judge_for("tiny-qwen2vl")
    bad = _request(np.zeros((20, 20, 4), np.uint8), 99)
    requests = _batch(3)[:2] + [bad] + _batch(3)[2:]
    out = judge.score(requests)
    assert len(out) == 4
    assert out[2].error is not None and "shape" in out[2].error and math.isnan(out[2].score)
    assert all(r.error is None for i, r in enumerate(out) if i != 2)


def test_non_finite_logits_become_failed_results(judge_for, monkeypatch):
    judge = judge_for("tiny-gemma3")
    judge.score([_request(_image(0))])
    original = judge._forward

    def poisoned(inputs, hidden):
        out = original(inputs, hidden)
        out.logits[0, -1, :] = float("nan")
        return out

    monkeypatch.setattr(judge, "_forward", poisoned)
    out = judge.score(_batch(3))
    assert out[0].error == "non-finite logits" and math.isnan(out[0].score)
    assert out[1].error is None and out[2].error is None


def test_oom_halves_the_batch(home):
    judge = TransformersJudge("tiny-internvl", JudgeSettings(device="cpu", home=home, batch_size=8),
                              checkpoint_factory=lambda: tiny_checkpoint("tiny-internvl", home))
    requests = _batch(8)
    reference = [judge.score([r])[0].score for r in requests]
    seen: list[int] = []

    def oom_above_two(n: int) -> bool:
        seen.append(n)
        return n > 2

    judge._batch_size = 8
    judge._simulate_oom = oom_above_two
    out = judge.score(requests)
    assert seen[:3] == [8, 4, 2]
    assert judge._batch_size == 2
    assert all(r.error is None for r in out)
    assert np.allclose([r.score for r in out], reference, atol=1e-3)

    judge._simulate_oom = lambda n: True  # even one item does not fit
    out = judge.score(requests[:3])
    assert len(out) == 3 and all(r.error and "out of memory" in r.error for r in out)


def test_oom_is_caught_for_the_real_cuda_exception_type(home, monkeypatch):
    import torch

    from miqa_checks.judges.devices import oom_exceptions

    assert torch.cuda.OutOfMemoryError in oom_exceptions()
    judge = load_judge("tiny-idefics3", JudgeSettings(device="cpu", home=home, batch_size=4))
    judge.score([_request(_image(0))])
    original = judge._forward

    def forward(inputs, hidden):
        if inputs["input_ids"].shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return original(inputs, hidden)

    monkeypatch.setattr(judge, "_forward", forward)
    out = judge.score(_batch(4))
    assert judge._batch_size == 1 and all(r.error is None for r in out)


# ---------------------------------------------------------------------------- devices


def test_device_choice(monkeypatch):
    import torch

    from miqa_checks.judges import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == "cpu"
    assert devices.default_dtype("cpu") == torch.float32
    assert devices.dtype_label("cpu") == "float32" and devices.dtype_label("cuda:1") == "bfloat16"
    assert devices.auto_batch_size("cpu") == 8
    with pytest.raises(JudgeError):
        devices.resolve_device("cuda")
    with pytest.raises(JudgeError):
        devices.resolve_device("cuda:1")
    with pytest.raises(MiqaUsageError):
        devices.resolve_device("tpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices, "_no_gpu_driver", lambda: True)
    assert devices.resolve_device("auto") == "cpu"  # no driver node: CUDA cannot be there
    monkeypatch.setattr(devices, "_no_gpu_driver", lambda: False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert devices.resolve_device("auto") == "cuda:1"
    assert devices.resolve_device("cuda") == "cuda:1"
    assert devices.resolve_device("cuda:0") == "cuda:0"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw4")
    assert devices.resolve_device("auto") == "cuda:0"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert devices.resolve_device("auto") == "cuda:0"
    assert devices.default_dtype("cuda:0") == torch.bfloat16
    assert devices.auto_batch_size("cuda:0") == 32


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device")
def test_gpu_bfloat16_and_worker_assignment(home):
    import torch

    from miqa_checks.judges.devices import xdist_worker_index

    judge = load_judge("tiny-llava", JudgeSettings(device="auto", home=home))
    out = judge.score(_batch(4, embed=True))
    expected_device = f"cuda:{xdist_worker_index() % torch.cuda.device_count()}"
    assert judge.provenance()["device"] == expected_device
    assert judge.provenance()["dtype"] == "bfloat16"
    assert next(judge._model.parameters()).dtype == torch.bfloat16
    assert all(r.error is None and 1 <= r.score <= 5 for r in out)
    assert out[0].embedding.dtype == np.float32
    judge.close()
