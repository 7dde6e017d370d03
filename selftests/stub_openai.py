"""A scripted OpenAI-compatible server on 127.0.0.1 for the judge's time, secret and embedding tests.

Unlike ``fault_proxy.py`` (real model behind), every answer here is scripted, so a test can make a
server that trickles its answer one byte at a time, answers with control characters, echoes the
Authorization header, or offers an ``/embeddings`` endpoint that does or does not look at images.

``chat``:       ``"rating"`` answers ``answer`` (default ``"Rating: 3/5"``) as the message content;
                ``"trickle"`` sends the whole raw HTTP answer one byte per ``trickle_s`` seconds;
                ``"echo_auth"`` answers 400 quoting the request's Authorization header (and an
                ANSI escape and a NUL, as a careless server might).
                ``echo_first`` = N: the first N chat requests get the ``echo_auth`` answer anyway.
``embeddings``: ``"image"`` (a vector from the image's bytes), ``"constant"`` (one vector for every
                input), ``"absent"`` (404).
``service_s``:  each chat answer is held that long (a sleep: service time without CPU).
``capacity``:   when > 0, a chat request arriving while that many are in service gets 429 (an
                overloaded server), for the client's adaptive concurrency.
``tls``:        (certificate file, key file): serve HTTPS (``base_url`` says ``https``).

Records every request (:attr:`StubServer.seen`), the connections it accepted
(:attr:`StubServer.connections`) and, for trickled answers, whether the client hung up before the
last byte (:attr:`StubServer.hung_up`). Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default (5) refuses bursts of concurrent connections


@dataclass
class StubServer:
    model: str = "stub-vlm"
    chat: str = "rating"
    answer: str = "Rating: 3/5"
    embeddings: str = "absent"
    trickle_s: float = 0.2
    echo_first: int = 0
    service_s: float = 0.0
    capacity: int = 0
    tls: tuple[str, str] | None = None
    in_service: int = 0
    peak_in_service: int = 0
    refused: int = 0
    connections: int = 0  # TCP connections accepted
    chats: int = 0  # chat-completions requests received
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Authorization)
    hung_up: list[bool] = field(default_factory=list)
    trickling: int = 0  # trickled answers begun

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def base_url(self, userinfo: str = "") -> str:
        return f"{'https' if self.tls else 'http'}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/v1"

    def start(self) -> "StubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_trickling(self, n: int, timeout_s: float = 120.0) -> bool:
        """Wait (bounded) until ``n`` trickled answers have begun."""
        with self._ended:
            return self._ended.wait_for(lambda: self.trickling >= n, timeout_s)

    def wait_in_service(self, n: int, timeout_s: float = 120.0) -> bool:
        """Wait (bounded) until ``n`` chat requests are in service at once."""
        with self._ended:
            return self._ended.wait_for(lambda: self.in_service >= n, timeout_s)

    def trickles_ended(self, n: int, timeout_s: float = 120.0) -> list[bool]:
        """Wait (bounded) until ``n`` trickled answers ended; ``hung_up`` for each, in order."""
        with self._ended:
            self._ended.wait_for(lambda: len(self.hung_up) >= n, timeout_s)
            return list(self.hung_up)

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.seen]

    # ------------------------------------------------------------------ internals
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with stub._lock:
                    stub.connections += 1

            def do_GET(self) -> None:
                stub._record(self, "GET")
                if self.path.endswith("/models"):
                    return stub._json(self, 200, {"data": [{"id": stub.model}]})
                return stub._json(self, 404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                stub._record(self, "POST")
                if self.path.endswith("/embeddings"):
                    return stub._embed(self, json.loads(raw or b"{}"))
                with stub._lock:  # counted, not a scan of everything seen: the stub costs the same at any n
                    stub.chats += self.path.endswith("/chat/completions")
                    n_chat = stub.chats
                if stub.chat == "echo_auth" or n_chat <= stub.echo_first:
                    text = f"bad request\x1b[2J\x00; you sent {self.headers.get('Authorization')}"
                    return stub._json(self, 400, text.encode())  # raw: a JSON encoder would escape them
                payload = {"id": "stub", "choices": [{"index": 0, "message": {"role": "assistant", "content": stub.answer}}]}
                if stub.chat == "trickle":
                    return stub._trickle(self, payload)
                if not stub._admit():
                    return stub._json(self, 429, {"error": {"message": "overloaded"}})
                try:
                    stub._stop.wait(stub.service_s)
                finally:
                    with stub._ended:  # the slot is free once the answer is made, before it is sent
                        stub.in_service -= 1
                return stub._json(self, 200, payload)

        return Handler

    def _admit(self) -> bool:
        with self._lock:
            if self.capacity and self.in_service >= self.capacity:
                self.refused += 1
                return False
            self.in_service += 1
            self.peak_in_service = max(self.peak_in_service, self.in_service)
            self._ended.notify_all()
            return True

    def _record(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.seen.append((method, h.path, h.headers.get("Authorization") or ""))

    @staticmethod
    def _raw(status: int, payload: dict | bytes) -> bytes:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        return head.encode() + data

    def _json(self, h: BaseHTTPRequestHandler, status: int, payload: dict | bytes) -> None:
        h.wfile.write(self._raw(status, payload))
        h.wfile.flush()

    def _trickle(self, h: BaseHTTPRequestHandler, payload: dict) -> None:
        """The whole raw answer (status line included) one byte per ``trickle_s``: no single read
        ever waits long, so only a whole-request deadline ends it."""
        h.close_connection = True
        with self._ended:
            self.trickling += 1
            self._ended.notify_all()
        raw = self._raw(200, payload)
        for i in range(len(raw)):
            if self._stop.wait(self.trickle_s):
                break
            try:
                h.wfile.write(raw[i : i + 1])
                h.wfile.flush()
            except OSError:  # the client hung up
                return self._trickle_ended(True)
        self._trickle_ended(False)

    def _trickle_ended(self, hung_up: bool) -> None:
        with self._ended:
            self.hung_up.append(hung_up)
            self._ended.notify_all()

    def _embed(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        if self.embeddings == "absent":
            return self._json(h, 404, {"error": {"message": "no embeddings here"}})
        text = json.dumps(body.get("messages") or body.get("input"))
        seed = text if self.embeddings == "image" else "constant"
        digest = hashlib.sha256(seed.encode()).digest()
        vector = [b / 255.0 - 0.5 for b in digest[:16]]
        return self._json(h, 200, {"data": [{"index": 0, "embedding": vector}], "model": self.model})
