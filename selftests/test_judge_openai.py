"""Self-tests of the OpenAI-compatible judge against a REAL local server.

One ``transformers serve`` process (tiny random-weight Qwen2-VL checkpoint, CPU, 127.0.0.1) is
started per module; a fault-injecting proxy (``selftests/fault_proxy.py``) sits in front of it.

``transformers serve`` ignores ``logprobs`` / ``top_logprobs``, so the log-probability (``expected``)
path is tested by having the proxy INJECT a ``logprobs`` structure, built from a fixed table, into
the real server's response (labelled ``x_fault_proxy: injected-logprobs``). The generate-and-parse
path and every fault kind run against the real model's real responses.

Run: ``pytest -p no:cacheprovider selftests/test_judge_openai.py``
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # selftests/ helpers, whatever the import mode
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miqa_checks.errors import JudgeError, MiqaUsageError
from miqa_checks.judges import load_judge
from miqa_checks.judges.base import JudgeSettings
from miqa_checks.judges.openai_judge import OpenAIJudge, encode_image_png, level_probs, parse_spec
from miqa_checks.records import RequestMeta, ScoreRequest
from selftests.fault_proxy import FaultProxy, always, marker_plan, no_faults, seeded_plan
from selftests.servers import free_port, server_fixture

ENV_VARS = ("MIQA_OPENAI_API_KEY", "OPENAI_API_KEY", "MIQA_OPENAI_CONCURRENCY", "MIQA_OPENAI_RETRIES",
            "MIQA_OPENAI_TIMEOUT", "MIQA_OPENAI_BACKOFF", "MIQA_OPENAI_MAX_RETRY_AFTER")


# ---------------------------------------------------------------------------------- fixtures
server = server_fixture("tiny-qwen2vl", scope="module")  # one real transformers-serve process per module


@pytest.fixture(scope="module")
def module_proxy(server):
    proxy = FaultProxy(server.root_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture()
def proxy(module_proxy):
    """The module's proxy, reset to no faults and default knobs for each test."""
    module_proxy.reset(no_faults)
    module_proxy.retry_after_s = 1.0
    module_proxy.timeout_sleep_s = 2.0
    module_proxy.delay_s = 0.0
    yield module_proxy
    module_proxy.reset(no_faults)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MIQA_OPENAI_BACKOFF", "0.02")  # keep retries quick in tests
    monkeypatch.setenv("MIQA_OPENAI_TIMEOUT", "30")


def make_judge(proxy: FaultProxy, model: str, **settings) -> OpenAIJudge:
    settings.setdefault("max_new_tokens", 8)
    judge = load_judge(f"openai:{proxy.base_url}#{model}", JudgeSettings(**settings))
    assert isinstance(judge, OpenAIJudge)
    return judge


def requests_for(prompts: list[str], grey: bool = True, seed: int = 0) -> list[ScoreRequest]:
    rng = np.random.default_rng(seed)
    out = []
    for i, prompt in enumerate(prompts):
        shape = (48, 40) if grey or i % 2 == 0 else (48, 40, 3)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        out.append(ScoreRequest(image=image, prompt=prompt, meta=RequestMeta("samples", "CT", f"img{i}")))
    return out


PROMPT = "You are seeing a medical image of CT. Rate the quality from 1 to 5 as x/5. "


# ---------------------------------------------------------------------------------- no server
@pytest.mark.parametrize(
    "spec",
    ["openai:", "openai:http://127.0.0.1:8000/v1", "openai:http://127.0.0.1:8000/v1#", "openai:127.0.0.1:8000#m",
     "openai:ftp://127.0.0.1/v1#m", "openai:http://127.0.0.1:99999/v1#m", "openai:http:///v1#m"],
)
def test_malformed_spec_is_a_usage_error(spec):
    with pytest.raises(MiqaUsageError, match=r"openai:<base_url>#<model>"):
        OpenAIJudge(spec, JudgeSettings())


def test_bad_env_and_method_are_usage_errors(monkeypatch):
    with pytest.raises(MiqaUsageError, match="method"):
        OpenAIJudge("openai:http://127.0.0.1:1/v1#m", JudgeSettings(method="beam"))
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "zero")
    with pytest.raises(MiqaUsageError, match="MIQA_OPENAI_CONCURRENCY"):
        OpenAIJudge("openai:http://127.0.0.1:1/v1#m", JudgeSettings())


def test_spec_parsing_keeps_model_with_slashes_and_hides_credentials():
    spec = parse_spec("openai:http://user:pw@127.0.0.1:8000/v1/#org/model-7b")
    assert spec.base_url == "http://user:pw@127.0.0.1:8000/v1"
    assert spec.model == "org/model-7b"
    assert spec.display_url == "127.0.0.1:8000/v1"
    assert "pw" not in spec.safe_spec


def test_png_encoding_keeps_grey_grey():
    from PIL import Image

    for shape, mode in (((5, 7), "L"), ((5, 7, 3), "RGB"), ((5, 7, 1), "L")):
        arr = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
        url = encode_image_png(arr)
        assert url.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert img.mode == mode and img.size == (7, 5)
        np.testing.assert_array_equal(np.asarray(img), arr.reshape(img.size[1], img.size[0], -1).squeeze(-1)
                                      if mode == "L" else arr)
    with pytest.raises(ValueError):
        encode_image_png(np.zeros((4, 4), dtype=np.float32))


def test_level_probs_merges_duplicates_and_ignores_other_tokens():
    probs = level_probs([(" 2", math.log(0.1)), ("2", math.log(0.1)), ("5", math.log(0.2)), ("x", 0.0), ("10", 0.0)])
    assert probs == pytest.approx((0.0, 0.5, 0.0, 0.0, 0.5))
    assert level_probs([("a", -1.0), ("/", -2.0)]) is None


def test_unreachable_server_is_a_fast_judge_error():
    port = free_port()  # nothing listens there
    judge = OpenAIJudge(f"openai:http://127.0.0.1:{port}/v1#m", JudgeSettings())
    start = time.monotonic()
    with pytest.raises(JudgeError, match=rf"http://127\.0\.0\.1:{port}/v1"):
        judge.score(requests_for([PROMPT]))
    assert time.monotonic() - start < 5.0


# ---------------------------------------------------------------------------------- real server
def test_image_reaches_the_real_model(server):
    """Sanity of the request format: an image part adds prompt tokens on the real server."""
    image_url = encode_image_png(np.full((56, 56), 128, dtype=np.uint8))

    def prompt_tokens(with_image: bool) -> int:
        content = ([{"type": "image_url", "image_url": {"url": image_url}}] if with_image else [])
        content.append({"type": "text", "text": PROMPT})
        body = {"model": server.model, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
        r = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60, trust_env=False)
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens"]

    assert prompt_tokens(True) > prompt_tokens(False)


def test_generate_and_parse_against_real_server(server, proxy):
    judge = make_judge(proxy, server.model, method="generate", max_new_tokens=12, system_prompt="You are an expert clinician.")
    reqs = requests_for([PROMPT, PROMPT + "(rgb)", PROMPT + "(again)"], grey=False)
    t0 = time.monotonic()
    results = judge.score(reqs)
    elapsed = time.monotonic() - t0
    assert len(results) == 3
    chat = proxy.chat_requests()
    assert len(chat) == 3 and all(s.status == 200 for s in chat)
    for res in results:
        assert res.method == "generate" and res.error is None and res.probs is None
        assert isinstance(res.raw_text, str)
        if res.parse_ok:  # random weights: whatever came back is parsed by the published rule
            assert math.isfinite(res.score)
        else:  # a parse failure is recorded, not dropped
            assert math.isnan(res.score)
    prov = judge.provenance()
    assert prov["server_model_id"] == server.model and prov["server_logprobs"] == "unknown"
    assert judge.identity() == f"openai:127.0.0.1:{proxy.url.rsplit(':', 1)[1]}/v1#{server.model}|served={server.model}|method=generate"
    print(f"generate: 3 items in {elapsed:.3f} s; mean request {np.mean([s.duration_s for s in chat]) * 1000:.0f} ms")
    judge.close()


def test_expected_falls_back_to_generate_when_server_gives_no_logprobs(server, proxy, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "1")  # sequential: the request count is exact
    judge = make_judge(proxy, server.model, method="expected")
    results = judge.score(requests_for([PROMPT + str(i) for i in range(4)]))
    assert [r.method for r in results] == ["generate"] * 4
    assert all(r.error is None for r in results)
    assert judge.provenance()["server_logprobs"] == "no"
    chat = proxy.chat_requests()
    # items 1-2: expected request (no logprobs back) + generate; then the judge stops asking: generate only
    asked = [bool(s.body and s.body.get("logprobs")) for s in chat]
    assert asked == [True, False, True, False, False, False]
    assert [s.body["max_tokens"] for s in chat] == [1, 8, 1, 8, 8, 8]
    assert all(s.body["temperature"] == 0 for s in chat)


def test_expected_from_injected_logprobs_matches_hand_computation(server, proxy):
    """transformers serve ignores logprobs: the proxy injects INJECTED_TOP_LOGPROBS into its responses.

    Table (token, logprob): hello -0.9, " 4" -1.2, "3" -0.6, "4" -2.0, "/" -3.5, "2" -2.3, " 5" -4.0, "10" -1.5.
    Levels: 3 -> -0.6; 4 -> logsumexp(-1.2, -2.0); 2 -> -2.3; 5 -> -4.0; 1 absent -> 0.
    """
    proxy.reset(always("inject_logprobs"))
    judge = make_judge(proxy, server.model, method="expected")
    results = judge.score(requests_for([PROMPT, PROMPT + "b", PROMPT + "c"]))
    l4 = math.log(math.exp(-1.2) + math.exp(-2.0))
    w = {2: math.exp(-2.3), 3: math.exp(-0.6), 4: math.exp(l4), 5: math.exp(-4.0)}
    z = sum(w.values())
    expected_probs = tuple(w.get(k, 0.0) / z for k in range(1, 6))
    expected_score = sum(k * p for k, p in zip(range(1, 6), expected_probs))
    for res in results:
        assert res.method == "expected" and res.error is None and res.raw_text == ""
        assert res.probs == pytest.approx(expected_probs, abs=1e-12)
        assert res.score == pytest.approx(expected_score, abs=1e-12)
    assert judge.provenance()["server_logprobs"] == "yes"
    chat = proxy.chat_requests()
    assert len(chat) == 3 and all(s.fault == "inject_logprobs" and s.status == 200 for s in chat)


def test_logprobs_without_any_level_fall_back_to_generate(server, proxy):
    proxy.reset(always("inject_logprobs"))
    proxy.logprob_table = (("hello", -0.1), ("/", -1.0), ("10", -2.0))
    try:
        judge = make_judge(proxy, server.model, method="expected")
        (res,) = judge.score(requests_for([PROMPT]))
    finally:
        from selftests.fault_proxy import INJECTED_TOP_LOGPROBS

        proxy.logprob_table = INJECTED_TOP_LOGPROBS
    assert res.method == "generate" and res.error is None
    assert len(proxy.chat_requests()) == 2


def test_stripped_logprobs_fall_back_per_item(server, proxy, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "1")
    proxy.reset(marker_plan(default="inject_logprobs"))
    judge = make_judge(proxy, server.model, method="expected")
    results = judge.score(requests_for([PROMPT, PROMPT + "[fault:strip_logprobs]", PROMPT + "c"]))
    assert [r.method for r in results] == ["expected", "generate", "expected"]
    assert all(r.error is None for r in results)
    assert judge.provenance()["server_logprobs"] == "partial"


FAULT_REASONS = {
    "500": r"^HTTP 500 after 3 attempts$",
    "429": r"^HTTP 429 after 3 attempts$",
    "reset": r"^connection error \(\w+\) after 3 attempts$",
    "malformed": r"^malformed JSON response after 3 attempts$",
    "timeout": r"^timeout \(3 s\) after 3 attempts$",
}


@pytest.mark.parametrize("kind", list(FAULT_REASONS))
def test_fault_becomes_failed_record_after_bounded_retries(server, proxy, monkeypatch, kind):
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "3")
    if kind == "timeout":
        # the client timeout must exceed what a healthy request takes on a loaded CI machine
        # (the server answers one request at a time), or the healthy ones time out and retry too
        monkeypatch.setenv("MIQA_OPENAI_TIMEOUT", "3")
        proxy.timeout_sleep_s = 3.5
    proxy.retry_after_s = 0.05
    proxy.reset(marker_plan())
    judge = make_judge(proxy, server.model, method="generate")
    results = judge.score(requests_for([PROMPT + "a", PROMPT + f"[fault:{kind}]", PROMPT + "c"]))
    ok = [results[0], results[2]]
    assert all(r.error is None and r.method == "generate" for r in ok)  # the rest of the batch is scored
    bad = results[1]
    assert math.isnan(bad.score) and not bad.parse_ok and bad.method == "generate"
    assert bad.error is not None
    assert re.match(FAULT_REASONS[kind], bad.error), bad.error
    faulted = [s for s in proxy.chat_requests() if f"[fault:{kind}]" in s.prompt]
    assert [s.attempt for s in faulted] == [1, 2, 3]  # bounded: exactly 3 attempts
    assert judge.stats()["retries"] == 2 and judge.stats()["failed_items"] == 1


def test_transient_faults_recover(server, proxy, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "4")
    proxy.retry_after_s = 0.05
    proxy.reset(marker_plan())
    judge = make_judge(proxy, server.model, method="generate")
    prompts = [PROMPT + "[fault:500*2]", PROMPT + "[fault:reset*1]", PROMPT + "[fault:malformed*3]", PROMPT + "[fault:429*1]"]
    results = judge.score(requests_for(prompts))
    assert all(r.error is None for r in results), [r.error for r in results]
    attempts = {p: max(s.attempt for s in proxy.chat_requests() if s.prompt.endswith(p[-18:])) for p in prompts}
    assert sorted(attempts.values()) == [2, 2, 3, 4]


def test_4xx_from_real_server_is_not_retried(server, proxy):
    judge = make_judge(proxy, "not-the-served-model", method="generate")
    results = judge.score(requests_for([PROMPT, PROMPT + "b"]))
    for res in results:
        assert res.error is not None and res.error.startswith("HTTP 400 (not retried)")
    assert len(proxy.chat_requests()) == 2  # one attempt each


def test_429_honours_retry_after_within_bounds(server, proxy, monkeypatch):
    proxy.retry_after_s = 1.0
    proxy.reset(marker_plan())
    judge = make_judge(proxy, server.model, method="generate")
    (res,) = judge.score(requests_for([PROMPT + "[fault:429*1]"]))
    assert res.error is None
    first, second = proxy.chat_requests()
    gap = second.started - (first.started + first.duration_s)
    assert 0.95 <= gap < 3.0, gap
    # a huge Retry-After is capped (MIQA_OPENAI_MAX_RETRY_AFTER)
    monkeypatch.setenv("MIQA_OPENAI_MAX_RETRY_AFTER", "0.3")
    proxy.retry_after_s = 3600
    proxy.reset(marker_plan())
    judge = make_judge(proxy, server.model, method="generate")
    start = time.monotonic()
    (res,) = judge.score(requests_for([PROMPT + "[fault:429*1]"]))
    assert res.error is None and time.monotonic() - start < 3.0


def test_concurrency_is_bounded(server, proxy, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "3")
    proxy.delay_s = 0.5  # make requests overlap, even on a loaded machine
    judge = make_judge(proxy, server.model, method="generate", max_new_tokens=2)
    results = judge.score(requests_for([PROMPT + str(i) for i in range(9)]))
    assert all(r.error is None for r in results)
    assert proxy.max_in_flight == 3  # bounded, and actually concurrent


def test_seeded_fault_campaign_keeps_every_item(server, proxy, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "3")
    proxy.retry_after_s = 0.05
    proxy.reset(seeded_plan(7, {"500": 0.25, "reset": 0.1, "malformed": 0.1, "429": 0.1, "inject_logprobs": 0.2}))
    judge = make_judge(proxy, server.model, method="expected")
    results = judge.score(requests_for([PROMPT + str(i) for i in range(10)]))
    assert len(results) == 10
    for res in results:
        assert res.method in ("expected", "generate")
        assert (res.error is None) or (math.isnan(res.score) and "after 3 attempts" in res.error)
    assert judge.stats()["retries"] > 0


LEAK = "sk-test-DO-NOT-LEAK-7f3a9c1e5b"


def test_api_key_is_sent_but_never_leaks(server, proxy, monkeypatch, caplog):
    monkeypatch.setenv("MIQA_OPENAI_API_KEY", LEAK)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other-should-not-be-used")
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "2")
    caplog.set_level(logging.DEBUG)
    proxy.reset(marker_plan())
    texts: list[str] = []
    judge = make_judge(proxy, server.model, method="expected")
    results = judge.score(requests_for([PROMPT, PROMPT + "[fault:echo_400]", PROMPT + "[fault:500]", PROMPT + "[fault:reset]"]))
    assert proxy.authorization_headers() == {f"Bearer {LEAK}"}
    assert results[1].error is not None and "Bearer ***" in results[1].error  # echoed key scrubbed
    assert results[2].error == "HTTP 500 after 2 attempts"
    texts += [judge.identity(), repr(judge), str(judge.provenance()), str(judge.stats())]
    texts += [repr(r) for r in results] + [r.error or "" for r in results]
    # unreachable server with the key set: the error text is clean too
    bad = OpenAIJudge(f"openai:http://127.0.0.1:{free_port()}/v1#m", JudgeSettings())
    with pytest.raises(JudgeError) as info:
        bad.score(requests_for([PROMPT]))
    texts += [str(info.value), repr(info.value)]
    texts.append(caplog.text)
    for text in texts:
        assert LEAK not in text and "DO-NOT-LEAK" not in text
    assert judge.provenance()["api_key"] == "set"


def test_openai_api_key_is_the_fallback(server, proxy, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback-DO-NOT-LEAK-1")
    judge = make_judge(proxy, server.model, method="generate", max_new_tokens=2)
    judge.score(requests_for([PROMPT]))
    assert proxy.authorization_headers() == {"Bearer sk-fallback-DO-NOT-LEAK-1"}
    assert "DO-NOT-LEAK" not in str(judge.provenance())
