"""Credentials in model URLs and control characters never reach a report, a log or the terminal.

Unit level: ``scrub`` (URL userinfo, query tokens, basic auth), ``printable`` and ``junit.xml``;
the OpenAI-compatible judge's own messages and provenance. The same through the audit is in
test_reliability_served.py (``test_url_credentials_and_control_characters_never_leak``).
"""

from __future__ import annotations

import base64
import logging
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miqa_checks.errors import JudgeError
from miqa_checks.judges import JudgeSettings, load_judge
from miqa_checks.junit import CaseRecord, write_junit
from miqa_checks.records import RequestMeta, ScoreRequest
from miqa_checks.safe_io import printable, scrub
from selftests.stub_openai import StubServer

SECRET = "pw-Zq81xLeak"
BASIC = base64.b64encode(f"ann:{SECRET}".encode()).decode()


@pytest.mark.parametrize("text,expected", [
    (f"openai:http://ann:{SECRET}@127.0.0.1:8000/v1#m", "openai:http://<redacted>@127.0.0.1:8000/v1#m"),
    (f"GET https://tok{SECRET}@h.example/v1/models failed", "GET https://<redacted>@h.example/v1/models failed"),
    (f"http://h:1/v1?api_key={SECRET}&x=1", "http://h:1/v1?api_key=<redacted>&x=1"),
    (f"http://h:1/v1?x=1&token={SECRET}#f", "http://h:1/v1?x=1&token=<redacted>#f"),
    (f"Authorization: Basic {BASIC}", "Authorization: <redacted>"),
    ("http://h:1/v1 and bob@example.com", "http://h:1/v1 and bob@example.com"),
])
def test_scrub_redacts_url_credentials(text, expected):
    assert scrub(text) == expected


def test_printable_escapes_control_characters():
    raw = "3/5\x1b[2J\x00\r\x85\ud800 ok"
    assert printable(raw) == "3/5\\x1b[2J\\x00\\x0d\\x85\\ud800 ok"
    assert printable("a\nb\tc", multiline=True) == "a\nb\tc"
    assert printable("a\nb") == "a\\x0ab"


def test_junit_with_control_characters_parses(tmp_path):
    bad = "answer \x1b[31m3\x00/5\x0c\r"
    case = CaseRecord("tests/test_audit.py::test_x[m\x07]", "failed", 0.1, message=bad, details=f"line1\n{bad}",
                      properties=[("raw\x01", bad)])
    write_junit(tmp_path / "junit.xml", [case], scrub=scrub)
    root = ET.parse(tmp_path / "junit.xml").getroot()  # unparseable before: XML 1.0 has no \x00 \x1b
    (testcase,) = root.iter("testcase")
    failure = testcase.find("failure")
    assert failure.get("message") == "answer \\x1b[31m3\\x00/5\\x0c\\x0d"
    assert failure.text.startswith("line1\n")
    assert testcase.find("properties/property").get("name") == "raw\\x01"


@pytest.fixture()
def stub():
    server = StubServer(chat="echo_auth").start()
    yield server
    server.stop()


def _request() -> ScoreRequest:
    return ScoreRequest(image=np.zeros((8, 8), np.uint8), prompt="Rate 1-5 as x/5.", meta=RequestMeta("d", "CT", "a"))


def test_judge_messages_and_provenance_hold_no_url_credentials(stub, monkeypatch, caplog):
    monkeypatch.delenv("MIQA_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "1")
    caplog.set_level(logging.DEBUG)
    judge = load_judge(f"openai:{stub.base_url(f'ann:{SECRET}')}#{stub.model}", JudgeSettings(method="generate"))
    (result,) = judge.score([_request()])
    assert f"Basic {BASIC}" in {auth for _, _, auth in stub.seen}  # the credentials were really used
    assert result.error is not None and "HTTP 400" in result.error  # the server echoed the header back
    texts = [result.error, repr(judge), str(judge.provenance()), judge.identity(), caplog.text]
    dead = load_judge(f"openai:http://ann:{SECRET}@127.0.0.1:9/v1#m", JudgeSettings())
    with pytest.raises(JudgeError) as info:
        dead.identity()
    texts.append(str(info.value))
    judge.close()
    for text in texts:
        assert SECRET not in text and BASIC not in text, text
