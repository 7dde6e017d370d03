"""Time limits of the OpenAI-compatible judge against a scripted server that trickles its answer.

``MIQA_OPENAI_TIMEOUT`` is a whole-request deadline: a server that sends one byte every 0.2 s never
lets a single read wait long, so a per-read timeout would wait for the whole answer. And
``cancel()`` stops waiting on in-flight requests at once. Both are observed from the server's
side: the client hangs up before the last byte.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miqa_checks.judges import JudgeCancelled, JudgeSettings, load_judge
from miqa_checks.records import RequestMeta, ScoreRequest
from selftests.stub_openai import StubServer


@pytest.fixture()
def trickler():
    stub = StubServer(chat="trickle", trickle_s=0.2).start()
    yield stub
    stub.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for var in ("MIQA_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "1")


def _request(i: int = 0) -> ScoreRequest:
    image = np.full((16, 16), (40 * i) % 256, dtype=np.uint8)
    return ScoreRequest(image=image, prompt="Rate 1 to 5 as x/5.", meta=RequestMeta("d", "CT", f"img{i}"))


def test_a_trickling_answer_ends_at_the_whole_request_deadline(trickler, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_TIMEOUT", "1.5")  # the answer (~150 bytes x 0.2 s) needs ~30 s
    judge = load_judge(f"openai:{trickler.base_url()}#{trickler.model}", JudgeSettings(method="generate"))
    try:
        (result,) = judge.score([_request()])
    finally:
        judge.close()
    assert result.error is not None and result.error.startswith("timeout"), result
    assert trickler.trickles_ended(1) == [True]  # the client stopped waiting before the answer was complete


def test_cancel_stops_waiting_on_in_flight_requests(trickler, monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_TIMEOUT", "3600")
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "2")
    judge = load_judge(f"openai:{trickler.base_url()}#{trickler.model}", JudgeSettings(method="generate"))
    outcome: list[BaseException | object] = []

    def work() -> None:
        try:
            outcome.append(judge.score([_request(i) for i in range(4)]))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert trickler.wait_trickling(2)  # both workers' requests are being answered
    judge.cancel()
    thread.join(120)  # a liveness bound far below the 3600 s deadline, not a speed threshold
    assert not thread.is_alive(), "score() kept waiting after cancel()"
    judge.close()
    assert len(outcome) == 1 and isinstance(outcome[0], JudgeCancelled), outcome
    assert trickler.trickles_ended(2) == [True, True]
    chat = [p for p in trickler.paths() if p.endswith("/chat/completions")]
    assert len(chat) == 2  # the two in flight; the pending two were never sent
    with pytest.raises(JudgeCancelled):
        judge.score([_request(9)])


def test_an_interrupt_in_the_calling_thread_stops_the_requests_in_flight(trickler, monkeypatch):
    """Ctrl-C or SIGTERM (raised as KeyboardInterrupt in the main thread) while a batch is in flight:
    the judge shuts its sockets instead of waiting for the workers to finish their answers."""
    import os
    import signal

    monkeypatch.setenv("MIQA_OPENAI_TIMEOUT", "3600")
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "2")
    judge = load_judge(f"openai:{trickler.base_url()}#{trickler.model}", JudgeSettings(method="generate"))

    def interrupt() -> None:
        if trickler.wait_trickling(2):
            os.kill(os.getpid(), signal.SIGINT)

    assert threading.current_thread() is threading.main_thread()
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even where this run inherited SIGINT
    # ignored (a shell's background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            judge.score([_request(i) for i in range(4)])
    finally:
        signal.signal(signal.SIGINT, previous)
    judge.close()
    assert trickler.trickles_ended(2) == [True, True]  # both answers were cut off, not waited for
