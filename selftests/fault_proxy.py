"""A small fault-injecting HTTP proxy on 127.0.0.1, put in front of a real OpenAI-compatible server.

Every request goes to a *plan* (a callable ``RequestInfo -> fault kind or None``); the proxy then
either forwards it unchanged or injects one of these faults:

``429``              answer 429 with ``Retry-After: <retry_after_s>`` (not forwarded)
``500``              answer 500 (not forwarded)
``reset``            close the socket without any response (RST)
``timeout``          hold the request ``timeout_sleep_s`` seconds (bounded, ends at stop()), then close
``malformed``        answer 200 with a body that is not JSON (not forwarded)
``echo_400``         answer 400 whose body quotes the request's Authorization header (a careless
                     server), to check that a client scrubs its key from error texts
``strip_logprobs``   forward, then delete ``choices[*].logprobs`` from the real response
``inject_logprobs``  forward, then put ``choices[0].logprobs`` built from a fixed table into the
                     real response; the response is labelled ``"x_fault_proxy": "injected-logprobs"``
                     and header ``X-Fault-Proxy: injected-logprobs``. Use it to test the
                     log-probability path against servers that ignore ``logprobs`` (transformers serve).

Plans are deterministic whatever the arrival order: :func:`marker_plan` reads ``[fault:KIND]`` or
``[fault:KIND*N]`` (only the first N attempts of that request) from the prompt text;
:func:`seeded_plan` draws from a seeded hash of (request body, attempt); :func:`sequence_plan`
follows the arrival order (only for sequential clients).

The proxy records every request (:attr:`FaultProxy.seen`), the Authorization headers it saw and
the largest number of requests in flight at once (:attr:`FaultProxy.max_in_flight`).
Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

FAULT_KINDS = ("429", "500", "reset", "timeout", "malformed", "strip_logprobs", "inject_logprobs", "echo_400")

#: Default table for ``inject_logprobs``: (token as the server would decode it, log-probability).
#: Deliberately messy like real servers: unsorted, leading spaces, a duplicate level ("4" and " 4"),
#: non-level tokens, a missing level (1).
INJECTED_TOP_LOGPROBS: tuple[tuple[str, float], ...] = (
    ("hello", -0.9),
    (" 4", -1.2),
    ("3", -0.6),
    ("4", -2.0),
    ("/", -3.5),
    ("2", -2.3),
    (" 5", -4.0),
    ("10", -1.5),
)

_MARKER = re.compile(r"\[fault:([a-z_0-9]+)(?:\*(\d+))?\]")


@dataclass(frozen=True)
class RequestInfo:
    """What a plan sees about one request.

    index: arrival number (0-based) among all requests; attempt: 1-based count of requests with
    the same method, path and body so far (a client's retry of the same request counts up).
    """

    index: int
    method: str
    path: str
    body: dict | None
    prompt: str
    attempt: int


@dataclass
class Seen:
    """One request as the proxy handled it."""

    index: int
    method: str
    path: str
    fault: str | None
    status: int | None  # None: no response sent (reset / timeout)
    attempt: int
    prompt: str
    started: float = 0.0  # time.monotonic() when the request arrived
    duration_s: float = 0.0
    authorization: str | None = field(default=None, repr=False)
    body: dict | None = field(default=None, repr=False)


Plan = Callable[[RequestInfo], "str | None"]


def no_faults(info: RequestInfo) -> str | None:
    return None


def always(kind: str) -> Plan:
    """Every chat-completions request gets ``kind``."""
    _check(kind)
    return lambda info: kind if info.path.endswith("/chat/completions") else None


def marker_plan(default: str | None = None) -> Plan:
    """``[fault:KIND]`` in the prompt: every attempt; ``[fault:KIND*N]``: the first N attempts."""
    if default is not None:
        _check(default)

    def plan(info: RequestInfo) -> str | None:
        match = _MARKER.search(info.prompt)
        if not match:
            return default if info.path.endswith("/chat/completions") else None
        kind, n = match.group(1), match.group(2)
        _check(kind)
        if n is not None and info.attempt > int(n):
            return None
        return kind

    return plan


def seeded_plan(seed: int, rates: dict[str, float]) -> Plan:
    """Fault ``kind`` with probability ``rates[kind]``, drawn from a hash of (seed, body, attempt)."""
    for kind in rates:
        _check(kind)
    if sum(rates.values()) > 1:
        raise ValueError("fault rates sum to more than 1")

    def plan(info: RequestInfo) -> str | None:
        if not info.path.endswith("/chat/completions") or info.body is None:
            return None
        digest = hashlib.sha256(
            f"{seed}|{json.dumps(info.body, sort_keys=True)}|{info.attempt}".encode()
        ).digest()
        u = random.Random(digest).random()
        acc = 0.0
        for kind, rate in rates.items():
            acc += rate
            if u < acc:
                return kind
        return None

    return plan


def sequence_plan(kinds: list[str | None]) -> Plan:
    """The k-th chat-completions request gets ``kinds[k]`` (None: forward); later ones pass."""
    for kind in kinds:
        if kind is not None:
            _check(kind)
    counter = iter(range(10**9))
    lock = threading.Lock()

    def plan(info: RequestInfo) -> str | None:
        if not info.path.endswith("/chat/completions"):
            return None
        with lock:
            k = next(counter)
        return kinds[k] if k < len(kinds) else None

    return plan


def _check(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")


def _prompt_text(body: dict | None) -> str:
    if not isinstance(body, dict):
        return ""
    texts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(texts)


def injected_logprobs(table: tuple[tuple[str, float], ...]) -> dict:
    """An OpenAI chat ``logprobs`` object whose first token's top list is ``table``."""
    first = max(table, key=lambda t: t[1])
    return {
        "content": [
            {
                "token": first[0],
                "logprob": first[1],
                "bytes": list(first[0].encode()),
                "top_logprobs": [
                    {"token": tok, "logprob": lp, "bytes": list(tok.encode())} for tok, lp in table
                ],
            }
        ]
    }


class FaultProxy:
    """Threaded HTTP proxy on 127.0.0.1 in front of ``upstream`` (``http://127.0.0.1:P``)."""

    def __init__(
        self,
        upstream: str,
        plan: Plan = no_faults,
        *,
        retry_after_s: float = 1.0,
        timeout_sleep_s: float = 2.0,
        delay_s: float = 0.0,
        logprob_table: tuple[tuple[str, float], ...] = INJECTED_TOP_LOGPROBS,
        max_timeout_sleep_s: float = 30.0,
    ) -> None:
        import httpx

        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.retry_after_s = retry_after_s
        self.timeout_sleep_s = min(timeout_sleep_s, max_timeout_sleep_s)
        self.delay_s = delay_s
        self.logprob_table = logprob_table
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts: dict[str, int] = {}
        self._index = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=120.0, trust_env=False)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The proxy's OpenAI base URL (``.../v1``)."""
        return self.url + "/v1"

    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def reset(self, plan: Plan | None = None) -> None:
        """Forget what was seen (and optionally swap the plan)."""
        with self._lock:
            self.seen.clear()
            self._attempts.clear()
            self._index = 0
            self.max_in_flight = self.in_flight
            if plan is not None:
                self.plan = plan

    def chat_requests(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.endswith("/chat/completions")]

    def authorization_headers(self) -> set[str]:
        with self._lock:
            return {s.authorization for s in self.seen if s.authorization}

    # ------------------------------------------------------------------ internals
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

            def do_POST(self) -> None:
                proxy._handle(self, "POST")

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        start = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = hashlib.sha256(method.encode() + h.path.encode() + raw).hexdigest()
        with self._lock:
            index = self._index
            self._index += 1
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        info = RequestInfo(index, method, h.path, body if isinstance(body, dict) else None, _prompt_text(body), attempt)
        fault = self.plan(info)
        record = Seen(index, method, h.path, fault, None, attempt, info.prompt,
                      started=start, authorization=h.headers.get("Authorization"), body=info.body)
        with self._lock:
            self.seen.append(record)  # recorded on arrival; status and duration filled in below
        try:
            self._respond(h, record, method, raw, fault)
        finally:
            record.duration_s = time.monotonic() - start
            with self._lock:
                self.in_flight -= 1

    def _send(self, h: BaseHTTPRequestHandler, record: "Seen", status: int, payload: bytes,
              headers: dict[str, str] | None = None) -> None:
        record.status = status  # before the client can have its answer, so readers never see it unset
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(payload)
        h.wfile.flush()

    def _drop(self, h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def _respond(self, h: BaseHTTPRequestHandler, record: "Seen", method: str, raw: bytes, fault: str | None) -> None:
        """Answer (or drop) one request as ``fault`` says; a dropped one keeps status None."""
        if self.delay_s and h.path.endswith("/chat/completions"):
            self._stop.wait(self.delay_s)
        if fault == "429":
            return self._send(h, record, 429, b'{"error": {"message": "rate limited (injected)"}}',
                              {"Retry-After": f"{self.retry_after_s:g}"})
        if fault == "500":
            return self._send(h, record, 500, b'{"error": {"message": "internal error (injected)"}}')
        if fault == "echo_400":
            echoed = json.dumps({"error": {"message": f"bad request; you sent {h.headers.get('Authorization')}"}})
            return self._send(h, record, 400, echoed.encode())
        if fault == "reset":
            self._drop(h)
            return
        if fault == "timeout":
            self._stop.wait(self.timeout_sleep_s)
            self._drop(h)
            return
        if fault == "malformed":
            return self._send(h, record, 200, b'{"id": "x", "choices": [{"message": {"content": "3/5"')
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        try:
            upstream = self._client.request(method, self.upstream + h.path, content=raw, headers=headers)
        except Exception as exc:  # upstream down: tell the client
            return self._send(h, record, 502, json.dumps({"error": {"message": f"proxy: upstream failed: {exc}"}}).encode())
        payload = upstream.content
        extra: dict[str, str] = {}
        if fault in ("strip_logprobs", "inject_logprobs") and upstream.status_code == 200:
            data = json.loads(payload)
            for choice in data.get("choices", []):
                choice.pop("logprobs", None)
            if fault == "inject_logprobs" and data.get("choices"):
                data["choices"][0]["logprobs"] = injected_logprobs(self.logprob_table)
                data["x_fault_proxy"] = "injected-logprobs"
                extra["X-Fault-Proxy"] = "injected-logprobs"
            payload = json.dumps(data).encode()
        return self._send(h, record, upstream.status_code, payload, extra)


@contextmanager
def fault_proxy(upstream: str, plan: Plan = no_faults, **kwargs: object) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` for the duration of the block."""
    proxy = FaultProxy(upstream, plan, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.stop()
