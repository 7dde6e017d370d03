"""Tiny offline checkpoints: build once per session, load through the Auto classes, react to images."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from miqa_checks.errors import MiqaUsageError  # noqa: E402
from miqa_checks.judges.tiny import FAMILIES, known_tiny_specs, tiny_checkpoint  # noqa: E402

SPECS = known_tiny_specs()


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Path:
    """One home for the whole session (both self-test files), so each checkpoint builds once."""
    home = tmp_path_factory.getbasetemp() / "miqa_home"
    home.mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="session")
def built(tiny_home):
    """spec -> (folder, build seconds); builds lazily, once per session."""
    cache: dict[str, tuple[Path, float]] = {}

    def get(spec: str) -> tuple[Path, float]:
        if spec not in cache:
            t0 = time.perf_counter()
            folder = tiny_checkpoint(spec, tiny_home)
            cache[spec] = (folder, time.perf_counter() - t0)
        return cache[spec]

    return get


def _images():
    rng = np.random.default_rng(7)
    from PIL import Image

    noisy = Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    flat = Image.fromarray(np.full((48, 40, 3), 128, np.uint8))
    return noisy, flat


@pytest.mark.parametrize("spec", SPECS)
def test_builds_loads_and_reacts_to_the_image(spec, built, record_property):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, build_s = built(spec)
    assert folder.name.startswith(spec + "-")
    assert any(folder.glob("*.safetensors"))
    assert not any(folder.glob("*.bin"))
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 5 * 2**20, "a tiny checkpoint must stay tiny"

    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    load_s = time.perf_counter() - t0
    record_property("build_s", round(build_s, 3))
    record_property("load_s", round(load_s, 3))

    tok = processor.tokenizer
    for digit in "12345":
        assert len(tok.encode(digit, add_special_tokens=False)) == 1, digit
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate 1 to 5."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    logits = []
    for image in _images():
        inputs = processor(text=[text], images=[[image]], return_tensors="pt")
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    diff = float((logits[0] - logits[1]).abs().max())
    record_property("image_logit_diff", round(diff, 4))
    assert diff > 1e-3, f"{spec}: the output ignores the image"


def test_gemma3_projector_is_not_zero(built):
    from safetensors import safe_open

    folder, _ = built("tiny-gemma3")
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        key = next(k for k in fh.keys() if k.endswith("mm_input_projection_weight"))
        assert float(fh.get_tensor(key).abs().sum()) > 0


def test_unknown_spec_lists_the_known_ones(tmp_path):
    with pytest.raises(MiqaUsageError) as info:
        tiny_checkpoint("tiny-nosuchfamily", tmp_path)
    for spec in FAMILIES:
        assert spec in str(info.value)
    assert not (tmp_path / "tiny").exists()


def test_second_use_reuses_the_folder(built, tiny_home):
    folder, _ = built("tiny-llava")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = tiny_checkpoint("tiny-llava", tiny_home)
    assert again == folder
    assert time.perf_counter() - t0 < 1.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_deterministic_and_concurrent_builders_agree(tmp_path, built):
    """Fixed seed: two homes give identical weights; racing builders end with one valid folder."""
    reference, _ = built("tiny-idefics3")
    results: list[Path] = []
    errors: list[BaseException] = []

    def build():
        try:
            results.append(tiny_checkpoint("tiny-idefics3", tmp_path))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(results)) == 1
    assert results[0].name == reference.name
    assert _digest(results[0]) == _digest(reference)
    leftovers = [p.name for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".")]
    assert leftovers == []
