"""Embeddings from a served model: the judge asks ``/embeddings`` once whether it embeds images.

A scripted server (selftests/stub_openai.py) offers an endpoint that embeds the image (``image``),
one that ignores it (``constant``), or none (``absent``). Only the first counts as a source; the
answer is cached, said in provenance, and a judge without embeddings scores normally.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miqa_checks.judges import JudgeSettings, load_judge
from miqa_checks.records import RequestMeta, ScoreRequest
from selftests.stub_openai import StubServer


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for var in ("MIQA_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "1")


def _requests(n: int = 3) -> list[ScoreRequest]:
    rng = np.random.default_rng(0)
    return [ScoreRequest(image=rng.integers(0, 256, (12, 10), dtype=np.uint8), prompt="Rate 1-5 as x/5.",
                         meta=RequestMeta("d", "CT", f"i{k}"), embed=True) for k in range(n)]


@pytest.mark.parametrize("mode,source", [("image", "endpoint"), ("constant", "none"), ("absent", "none")])
def test_embedding_source_is_probed_once_and_reported(mode, source):
    stub = StubServer(embeddings=mode).start()
    try:
        judge = load_judge(f"openai:{stub.base_url()}#{stub.model}", JudgeSettings(method="generate"))
        assert judge.provenance()["embeddings"] == "not asked"
        assert judge.embedding_source() == source
        assert judge.supports_embeddings() is (source != "none")
        results = judge.score(_requests())
        judge.embedding_source()
        provenance = judge.provenance()
        judge.close()
    finally:
        stub.stop()
    assert provenance["embeddings"] == source
    assert all(r.error is None and r.score == 3.0 for r in results)  # scoring does not depend on it
    embed_calls = [p for p in stub.paths() if p.endswith("/embeddings")]
    if source == "endpoint":
        vectors = [r.embedding for r in results]
        assert all(v is not None and v.dtype == np.float32 and v.shape == (16,) for v in vectors)
        assert len({v.tobytes() for v in vectors}) == 3  # one per image
        assert len(embed_calls) == 2 + 3  # the two-image probe, once; then one per request
    else:
        assert all(r.embedding is None for r in results)
        assert len(embed_calls) <= 2  # the probe only, never per request


def test_other_judges_state_their_embedding_source():
    settings = JudgeSettings(device="cpu")
    assert load_judge("sim-paper", settings).embedding_source() == "simulated"
    assert load_judge("tiny-llava", settings).embedding_source() == "hidden-state"
