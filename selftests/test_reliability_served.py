"""A served model under faults, through the audit: ``pytest tests --miqa-model openai:<proxy>/v1#<model>``.

A real OpenAI-compatible server (``transformers serve`` of tiny-qwen2vl on 127.0.0.1) sits behind
the fault-injecting proxy (selftests/fault_proxy.py). The seeded plan gives six requests a
permanent fault (429, 500, connection reset, timeout, malformed JSON, a 400 that echoes the API
key) and many others a transient one on their first attempt (the same kinds, plus missing
log-probabilities; ``transformers serve`` never returns log-probabilities anyway). The run must
complete, each permanent fault must become a failed row in scores.csv and an errors.csv record
with its reason after bounded retries, every other request must be scored, and the fake API key
(sent to the server, echoed back by it) must appear in no output file, store or log.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading

import pytest

from campaign import audit_env, run_audit_env, scan_for
from fault_proxy import FaultProxy, RequestInfo
from servers import server_fixture

server = server_fixture("tiny-qwen2vl", scope="module")

SEED = 7
FAKE_KEY = "sk-miqaSERVEDfake0123456789abcdef"
PERMANENT = {"429": "HTTP 429", "500": "HTTP 500", "reset": "connection error", "timeout": "timeout",
             "malformed": "malformed JSON", "echo_400": "HTTP 400"}
TRANSIENT = ("429", "500", "reset", "timeout", "malformed", "strip_logprobs")
N_REQUESTS = 16  # 8 images x (clean, pixelation-1)


def _image_url(body) -> str:
    if isinstance(body, dict):
        for v in body.values():
            if (found := _image_url(v)):
                return found
    elif isinstance(body, list):
        for v in body:
            if (found := _image_url(v)):
                return found
    elif isinstance(body, str) and body.startswith("data:image"):
        return body
    return ""


class SeededPlan:
    """Permanent faults for six requests drawn from the seed (by order of first arrival of each image,
    deterministic at concurrency 1); a transient fault on the first attempt of others (seeded hash)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.permanent = dict(zip(rng.sample(range(N_REQUESTS), len(PERMANENT)), PERMANENT))
        self.seed = seed
        self.order: dict[str, int] = {}
        self.hits: dict[int, int] = {}  # permanent-fault index -> attempts seen
        self.lock = threading.Lock()

    def __call__(self, info: RequestInfo) -> str | None:
        if not info.path.endswith("/chat/completions"):
            return None
        url = _image_url(info.body)
        with self.lock:
            index = self.order.setdefault(url, len(self.order))
        if index in self.permanent:
            with self.lock:
                self.hits[index] = self.hits.get(index, 0) + 1
            return self.permanent[index]
        h = hashlib.sha256(f"{self.seed}|{url}|{info.attempt}".encode()).digest()
        if info.attempt == 1 and h[0] < 128:
            return TRANSIENT[h[1] % len(TRANSIENT)]
        return None


@pytest.mark.slow
def test_served_model_faults_through_the_audit(tmp_path, server):
    plan = SeededPlan(SEED)
    proxy = FaultProxy(server.root_url, plan, retry_after_s=0.05, timeout_sleep_s=4.0).start()
    try:
        env = audit_env(
            MIQA_OPENAI_API_KEY=FAKE_KEY, MIQA_OPENAI_RETRIES="2", MIQA_OPENAI_BACKOFF="0.02",
            MIQA_OPENAI_TIMEOUT="3", MIQA_OPENAI_MAX_RETRY_AFTER="0.2", MIQA_OPENAI_CONCURRENCY="1",
        )
        run = run_audit_env(
            tmp_path, "--miqa-model", f"openai:{proxy.base_url}#{server.model}", "--miqa-max-images", "8",
            "-k", "corruption_stability and samples_ct and pixelation-1", env=env, timeout=400,
        )
        seen = proxy.chat_requests()
        auth = proxy.authorization_headers()
    finally:
        proxy.stop()
    assert run.returncode in (0, 1), run.output[-3000:]
    assert run.run_info["interrupted"] is False
    assert f"Bearer {FAKE_KEY}" in auth  # the key was really used
    faults = [s.fault for s in seen if s.fault]
    from collections import Counter

    print(f"\nSERVED-FAULTS requests={len(seen)} injected={dict(Counter(faults))} permanent={sorted(plan.permanent.values())}")
    assert set(faults) >= {*PERMANENT, "strip_logprobs"}, faults
    # bounded retries: a permanent fault is tried MIQA_OPENAI_RETRIES = 2 times in all, a 400 once
    for index, kind in plan.permanent.items():
        assert plan.hits[index] == (1 if kind == "echo_400" else 2), (kind, plan.hits)
    assert len(seen) < 10 * N_REQUESTS

    scores = run.scores
    assert len(scores) == N_REQUESTS  # one intact row per request (raw answers with CR included)
    failed = [r for r in scores if r["error"]]
    matched = sorted(k for r in failed for k, reason in PERMANENT.items() if r["error"].startswith(reason))
    assert matched == sorted(PERMANENT), [r["error"] for r in failed]
    for row in failed:
        assert row["score"] == "" and row["parse_ok"] == "false"
    # every other request got an answer: a score, or the random model's unparseable text, recorded
    others = [r for r in scores if not r["error"]]
    assert len(others) == N_REQUESTS - len(PERMANENT)
    assert all((r["parse_ok"] == "true" and 1 <= float(r["score"]) <= 5) or (r["parse_ok"] == "false" and r["raw_text"])
               for r in others), others
    errors = run.csv("errors.csv")
    assert sorted(e["reason"] for e in errors if e["stage"] == "score") == sorted(r["error"] for r in failed)
    assert sum(e["stage"] == "parse" for e in errors) == sum(r["parse_ok"] == "false" for r in others)
    (cell,) = run.matrix
    # 6 permanent faults leave most of the cell's images without a usable pair: more than
    # max_lost_share, so the cell is an error naming the count, never a verdict on what survived
    assert cell["verdict"] == "error", cell
    assert re.search(r"\d+ of \d+ images \(\d+%\) lost to errors", cell["reason"]), cell["reason"]
    assert run.returncode == 1

    # the key never reaches any output (the echoing server's 400 body included)
    assert scan_for(run.report_dir, [FAKE_KEY]) == []
    assert scan_for(tmp_path / "cache", [FAKE_KEY]) == []
    assert FAKE_KEY not in run.output
    assert any("HTTP 400" in r["error"] for r in failed)


# ------------------------------------------------------------------ URL credentials and control characters
URL_SECRET = "pw-miqaURLcanary77"
ANSWER = "Rating: 3/5 \x1b[31m\x00\x07\x0c\x1b]0;owned\x07"


def test_url_credentials_and_control_characters_never_leak(tmp_path):
    """``openai:http://user:secret@127.0.0.1:PORT/v1#m`` against a scripted server whose answers hold
    control characters and whose first six answers are a 400 echoing the Authorization header (with
    an ANSI escape and a NUL) back into errors.csv: the password
    (and its basic-auth form) appears in no report, store or terminal line; junit.xml parses; no
    raw control character reaches the terminal or a report."""
    import base64
    import xml.etree.ElementTree as ET

    from stub_openai import StubServer

    stub = StubServer(answer=ANSWER, echo_first=6).start()  # 6 of 8 requests fail with the echo
    basic = base64.b64encode(f"canary:{URL_SECRET}".encode()).decode()
    try:
        spec = f"openai:{stub.base_url(f'canary:{URL_SECRET}')}#{stub.model}"
        env = audit_env(MIQA_OPENAI_RETRIES="1", MIQA_OPENAI_CONCURRENCY="1")
        env.pop("MIQA_OPENAI_API_KEY", None)
        env.pop("OPENAI_API_KEY", None)
        run = run_audit_env(tmp_path, "--miqa-model", spec, "--miqa-max-images", "4", "-rA",
                            "-k", "corruption_stability and samples_ct and pixelation-1", env=env, timeout=300)
    finally:
        stub.stop()
    assert run.returncode in (0, 1), run.output[-3000:]
    assert f"Basic {basic}" in {auth for _, _, auth in stub.seen}  # the credentials were really sent
    assert any("HTTP 400" in e["reason"] for e in run.csv("errors.csv"))  # the echo was recorded, scrubbed
    markers = [URL_SECRET, basic]
    assert scan_for(run.report_dir, markers) == []
    assert scan_for(tmp_path / "cache", markers) == []
    assert not any(m in run.output for m in markers)
    ET.parse(run.report_dir / "junit.xml")  # parses: no raw control character inside
    for name in ("junit.xml", "matrix.csv", "scores.csv", "errors.csv", "run.json", "summary.html"):
        data = (run.report_dir / name).read_bytes()
        assert not any(c in data for c in (b"\x1b", b"\x00", b"\x07")), name
    assert not any(c in run.output for c in ("\x1b", "\x00", "\x07"))
    assert run.run_info["models"][0]["label"] == f"openai-{stub.model}"
