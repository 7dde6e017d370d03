"""The served judge's HTTP mechanics at scale, counted (never timed) against the scripted server.

- connections are kept alive: N requests at concurrency c open at most c connections;
- one deadline thread serves every attempt in flight (was: a timer thread per attempt);
- a request the server refused (429 without Retry-After) is retried as soon as a request of ours
  finishes (the server has a free slot), not after the exponential backoff.
"""

from __future__ import annotations

import sys
import threading
import time
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
    for var in ("MIQA_OPENAI_API_KEY", "OPENAI_API_KEY", "MIQA_OPENAI_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)


def _requests(n: int) -> list[ScoreRequest]:
    return [ScoreRequest(image=np.full((16, 16), i % 256, dtype=np.uint8), prompt="Rate 1 to 5 as x/5.",
                         meta=RequestMeta("d", "CT", f"img{i}")) for i in range(n)]


def _judge(stub: StubServer):
    return load_judge(f"openai:{stub.base_url()}#{stub.model}", JudgeSettings(method="generate"))


def test_connections_are_kept_alive(monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "4")
    stub = StubServer(service_s=0.01).start()
    judge = _judge(stub)
    try:
        results = judge.score(_requests(40))
    finally:
        judge.close()
        stub.stop()
    assert all(r.error is None and r.score == 3.0 for r in results)
    assert len(stub.paths()) == 41  # the probe and 40 answers
    assert stub.connections <= 4, stub.connections  # was one per request


def test_one_deadline_thread_serves_every_attempt_in_flight(monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "8")
    stub = StubServer(service_s=0.5).start()
    judge = _judge(stub)
    judge.identity()  # probe first: its attempt is over before the burst
    before = set(threading.enumerate())
    outcome: list = []
    scorer = threading.Thread(target=lambda: outcome.append(judge.score(_requests(8))), daemon=True)
    try:
        scorer.start()
        assert stub.wait_in_service(8)  # the burst: eight attempts in flight at once
        during = [t for t in threading.enumerate() if t not in before and t is not scorer
                  and not t.name.startswith("miqa-openai") and "process_request_thread" not in t.name]
        scorer.join(120)  # a liveness bound, not a speed threshold
    finally:
        judge.close()
        stub.stop()
    assert len(outcome) == 1 and all(r.error is None for r in outcome[0])
    assert len(during) <= 1, [t.name for t in during]  # at most the deadline thread (if not yet started)


class _CountingEvent(threading.Event):
    """The judge's cancel flag; its timed waits are the judge's backoff sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    def wait(self, timeout: float | None = None) -> bool:
        if timeout:
            self.sleeps += 1
        return super().wait(timeout)


def test_a_refused_request_is_retried_when_a_slot_frees_not_after_the_backoff(monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "8")
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "8")
    monkeypatch.setenv("MIQA_OPENAI_BACKOFF", "3600")  # a backoff wait would outlast a quick test
    stub = StubServer(service_s=0.05, capacity=2).start()
    judge = _judge(stub)
    judge._cancelled = sleeper = _CountingEvent()
    try:
        results = judge.score(_requests(24))
    finally:
        judge.close()
        stub.stop()
    assert stub.refused > 0 and stub.peak_in_service <= 2
    assert all(r.error is None and r.score == 3.0 for r in results)
    assert judge.stats()["retries"] == stub.refused
    assert sleeper.sleeps == 0  # no refused request sat out a backoff


def test_the_deadline_thread_runs_due_callbacks_and_skips_removed_ones():
    from miqa_checks.judges.http_transport import Watchdog

    watchdog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    now = time.monotonic()
    watchdog.add(now, lambda: fired.append("due"))
    removed = watchdog.add(now + 1.0, lambda: fired.append("removed"))  # removed long before it is due
    watchdog.remove(removed)
    watchdog.add(now + 1e6, lambda: fired.append("not yet"))
    watchdog.add(now + 2.0, done.set)  # after the removed one's time
    assert done.wait(60)
    assert fired == ["due"]


def test_a_refusal_one_above_what_the_server_holds_cuts_the_limit_by_one_not_by_half():
    from miqa_checks.judges.concurrency import AdaptiveLimit

    limit = AdaptiveLimit(cap=64, start=17)
    never, release = threading.Event(), threading.Event()
    held: list[threading.Thread] = []

    def hold() -> None:  # one request the server is serving
        assert limit.acquire(never)
        release.wait(120)
        limit.release(latency_s=None, overloaded=False)

    for _ in range(16):
        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        held.append(thread)
    for _ in range(12000):  # the sixteen take their slots (a liveness bound of 120 s)
        if limit.in_flight == 16:
            break
        release.wait(0.01)
    assert limit.acquire(never)  # the seventeenth, taken last: the server refuses it
    limit.release(latency_s=None, overloaded=True)
    release.set()
    for thread in held:
        thread.join(120)
    assert (limit.limit, limit.cuts) == (16, 1)  # was 8: half


def test_request_bodies_splice_the_image_in_without_encoding_it_again(monkeypatch):
    import json

    from miqa_checks.judges import openai_judge
    from miqa_checks.judges.openai_judge import encode_image_png, json_bytes

    url = encode_image_png(np.arange(48 * 40 * 3, dtype=np.uint8).reshape(48, 40, 3))
    odd = 'data:image/png;base64,"quoted"\\\n\x7f'  # needs escaping: encoded as json.dumps does
    bodies = [
        {"model": "m", "messages": [{"role": "system", "content": "S\u00fc \x00 \"q\" \\"},
                                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                                 {"type": "text", "text": "Rate \u2713 1-5 as x/5."}]}],
         "temperature": 0, "max_tokens": 8},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": odd}},
                                                                 {"type": "image_url", "image_url": {"url": url}}]}]},
        {"model": "m", "messages": []},
    ]
    for body in bodies:
        assert json_bytes(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    seen: list[bool] = []
    dumps = json.dumps

    def counting(obj, **kwargs):
        seen.append(url in repr(obj))
        return dumps(obj, **kwargs)

    monkeypatch.setattr(openai_judge.json, "dumps", counting)
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "1")
    stub = StubServer().start()
    judge = _judge(stub)
    try:
        request = ScoreRequest(image=np.zeros((4, 4), np.uint8), prompt="p", meta=RequestMeta("d", "CT", "i"), judge_input=url)
        (result,) = judge.score([request])
    finally:
        judge.close()
        stub.stop()
    assert result.error is None
    assert seen and not any(seen)  # the encoder never scanned the image's data URL again


def test_a_connection_cut_off_at_its_deadline_is_never_reused(monkeypatch):
    """The probe's connection goes back to the pool; the next request on it runs past its deadline
    and is cut off; the request after that must get a new connection (on the old one it would read
    the late answer of the request before)."""
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "1")
    monkeypatch.setenv("MIQA_OPENAI_RETRIES", "1")
    monkeypatch.setenv("MIQA_OPENAI_TIMEOUT", "0.5")
    stub = StubServer(service_s=3.0, answer="Rating: 2/5").start()
    judge = _judge(stub)
    try:
        judge.identity()  # one connection, kept alive
        (late,) = judge.score(_requests(1))
        stub.service_s, stub.answer = 0.0, "Rating: 4/5"
        (fresh,) = judge.score(_requests(1))
    finally:
        judge.close()
        stub.stop()
    assert late.error is not None and late.error.startswith("timeout"), late
    assert fresh.error is None and fresh.score == 4.0, fresh  # not the late 2/5 of the request before
    assert stub.connections == 2


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files in ``folder``); skips without openssl."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=120)
    return cert, key


def test_https_checks_the_certificate_and_keeps_connections_alive(tmp_path, monkeypatch):
    from miqa_checks.errors import JudgeError

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "2")
    stub = StubServer(tls=(str(cert), str(key))).start()
    try:
        with pytest.raises(JudgeError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted yet
            _judge(stub).identity()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted as httpx's context trusts it
        judge = _judge(stub)
        results = judge.score(_requests(8))
        judge.close()
    finally:
        stub.stop()
    assert stub.base_url().startswith("https://")
    assert all(r.error is None and r.score == 3.0 for r in results)
    assert stub.connections <= 2  # at most one per slot (the refused handshake never reached a handler)


class _TunnelProxy:
    """A CONNECT-only proxy on 127.0.0.1: records each CONNECT line and pipes bytes both ways."""

    def __init__(self) -> None:
        import socket

        self.connects: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client) -> None:
        import socket

        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return client.close()
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode()
        self.connects.append(line)
        host, _, port = line.split()[1].rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(2)
                except OSError:
                    pass
            source.close()

    def stop(self) -> None:
        self._server.close()


def _no_proxy_env(monkeypatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_proxies_from_the_environment_are_used_as_httpx_used_them(tmp_path, monkeypatch):
    """Plain HTTP in absolute form to the proxy (here the stub itself answers as the proxy);
    NO_PROXY bypasses it."""
    from selftests.servers import free_port

    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "2")
    stub = StubServer().start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://proxyuser:proxypw@127.0.0.1:{stub.port}")
        judge = load_judge("openai:http://upstream.invalid:9/v1#stub-vlm", JudgeSettings(method="generate"))
        results = judge.score(_requests(4))
        judge.close()
        paths = stub.paths()
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = _judge(stub)
        bypassed = direct.score(_requests(2))
        direct.close()
    finally:
        stub.stop()
    assert all(r.error is None and r.score == 3.0 for r in results + bypassed)
    assert len(paths) == 5 and all(p.startswith("http://upstream.invalid:9/v1/") for p in paths)
    assert stub.paths()[5:] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]


def test_https_through_a_proxy_tunnel(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "2")
    stub = StubServer(tls=(str(cert), str(key))).start()
    proxy = _TunnelProxy()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    try:
        judge = _judge(stub)
        results = judge.score(_requests(6))
        judge.close()
    finally:
        proxy.stop()
        stub.stop()
    assert all(r.error is None and r.score == 3.0 for r in results)
    assert proxy.connects and set(proxy.connects) == {f"CONNECT 127.0.0.1:{stub.port} HTTP/1.1"}
    assert len(proxy.connects) == stub.connections <= 2  # tunnels kept alive like connections


def test_a_connection_in_flight_at_close_is_closed_when_its_answer_ends(monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "1")
    stub = StubServer(service_s=0.5).start()
    judge = _judge(stub)
    try:
        judge.identity()
        transport = judge._transport
        outcome: list = []
        scorer = threading.Thread(target=lambda: outcome.append(judge.score(_requests(1))), daemon=True)
        scorer.start()
        assert stub.wait_in_service(1)
        judge.close()  # while the answer is on its way
        scorer.join(120)  # a liveness bound, not a speed threshold
    finally:
        stub.stop()
    assert len(outcome) == 1 and outcome[0][0].error is None
    assert transport._idle == []  # not pooled after close(): nothing would ever close it


def test_worker_threads_are_kept_from_batch_to_batch_until_close(monkeypatch):
    monkeypatch.setenv("MIQA_OPENAI_CONCURRENCY", "4")
    stub = StubServer(service_s=0.01).start()
    judge = _judge(stub)

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("miqa-openai")}

    try:
        first = judge.score(_requests(12))
        after_first = workers()
        second = judge.score(_requests(12))
        after_second = workers()
        judge.close()
        after_close = workers()
    finally:
        stub.stop()
    assert all(r.error is None for r in first + second)
    assert 0 < len(after_first) <= 4  # was 0: each batch started and joined its own threads
    assert after_second == after_first  # the same threads served the second batch
    assert not after_close
