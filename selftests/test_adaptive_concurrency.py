"""Served models: the OpenAI judge's concurrency adapts to the server (start high, halve on
429 / 503 / timeouts, back off on rising latency, grow back, never above MIQA_OPENAI_CONCURRENCY),
and takes the image encoding made ahead by the engine's preparation pool."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miqa_checks.judges import JudgeSettings, load_judge
from miqa_checks.judges.concurrency import LATENCY_RISE, AdaptiveLimit
from miqa_checks.judges.openai_judge import OpenAIJudge, _data_url, encode_image_png
from miqa_checks.records import RequestMeta, ScoreRequest
from selftests.stub_openai import StubServer

NEVER = threading.Event()


def _cycle(limit: AdaptiveLimit, **outcome) -> None:
    assert limit.acquire(NEVER)
    limit.release(**outcome)


def test_overload_halves_the_limit_once_per_window_and_clean_answers_grow_it_back():
    limit = AdaptiveLimit(cap=64)
    assert limit.limit == 64  # starts at the cap (at most 64)
    _cycle(limit, latency_s=10.0, overloaded=False)  # best latency 10 s: the window
    for _ in range(5):  # one burst of refusals is one cut
        _cycle(limit, latency_s=None, overloaded=True)
    assert (limit.limit, limit.cuts) == (32, 1)
    for _ in range(32):
        _cycle(limit, latency_s=10.0, overloaded=False)
    assert limit.limit == 33  # one more after a limit's worth of clean answers
    capped = AdaptiveLimit(cap=3)
    for _ in range(50):
        _cycle(capped, latency_s=1.0, overloaded=False)
    assert capped.limit == 3


def test_rising_latency_backs_off():
    limit = AdaptiveLimit(cap=16)
    _cycle(limit, latency_s=0.001, overloaded=False)
    for _ in range(40):  # the server queues: every answer far slower than the best
        _cycle(limit, latency_s=0.001 * LATENCY_RISE * 5, overloaded=False)
    assert limit.limit < 16 and limit.cuts >= 1


def test_acquire_gives_up_when_cancelled():
    limit = AdaptiveLimit(cap=1)
    assert limit.acquire(NEVER)
    cancelled = threading.Event()
    cancelled.set()
    assert limit.acquire(cancelled) is False
    assert limit.in_flight == 1


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for var in ("MIQA_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MIQA_OPENAI_BACKOFF", "0.05")


def _requests(n: int) -> list[ScoreRequest]:
    return [ScoreRequest(image=np.full((16, 16), i % 256, dtype=np.uint8), prompt="Rate 1 to 5 as x/5.",
                         meta=RequestMeta("d", "CT", f"img{i}")) for i in range(n)]


def test_an_overloaded_server_gets_every_request_answered_at_a_backed_off_limit(monkeypatch):
    stub = StubServer(service_s=0.1, capacity=4).start()
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "32")
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "8")
    judge = load_judge(f"openai:{stub.base_url()}#{stub.model}", JudgeSettings(method="generate"))
    try:
        results = judge.score(_requests(96))
    finally:
        judge.close()
        stub.stop()
    assert all(r.error is None and r.score == 3.0 for r in results)
    assert stub.refused > 0 and stub.peak_in_service <= 4
    assert judge._limit.cuts >= 1 and judge._limit.limit < 32


def test_the_image_encoding_made_ahead_is_used():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    made = OpenAIJudge.prepare_input(image)
    assert made == encode_image_png(image)
    request = ScoreRequest(image=np.zeros((16, 16), np.uint8), prompt="p", meta=RequestMeta("d", "CT", "i"), judge_input=made)
    assert _data_url(request) == made  # not the (different) pixels of request.image encoded again
    assert _data_url(ScoreRequest(image=image, prompt="p", meta=RequestMeta("d", "CT", "i"))) == made
