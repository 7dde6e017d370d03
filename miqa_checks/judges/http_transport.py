"""A lean HTTP/1.1 client for the served judge: keep-alive connections, whole-request deadlines.

Why not httpx for the hot path: at a few hundred requests per second its per-request machinery
(request and URL objects, h11's state machine, the pool's bookkeeping) and, without keep-alive, a
new TCP connection per attempt cost about 1 ms of CPU per request; this client writes the request
in one ``sendall`` on a pooled connection and parses the answer with a buffered reader.

Deadlines: every attempt has a whole-request deadline, kept by ONE watchdog thread per process
(:class:`Watchdog`, a heap of deadlines) instead of a timer thread per attempt. At the deadline,
or on :meth:`Transport.cancel`, the attempt's connection socket is shut down: the thread reading
it returns at once, and that connection is closed, never reused. A connection goes back to the
pool only after an answer was read whole and the server did not ask to close it.

HTTPS uses httpx's SSL context (certifi, ``SSL_CERT_FILE``), so certificates are checked as before.
Proxies from the environment are used as httpx used them (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``; an ``http://`` proxy, with basic auth from its userinfo): plain HTTP
goes to the proxy in absolute form, HTTPS through a ``CONNECT`` tunnel.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

#: an answer larger than this (bytes) is refused (a runaway server must not fill memory)
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_MAX_LINE = 65536
_MAX_HEADERS = 200


class TransportError(Exception):
    """The request failed at the network or protocol level (may be retried)."""


class ConnectError(TransportError):
    """No connection could be made to the server."""


class ConnectTimeout(ConnectError):
    """Connecting took longer than the connect timeout."""


class WriteError(TransportError):
    """The connection failed while the request was being sent."""


class ReadError(TransportError):
    """The connection failed while the answer was being read."""


class RemoteProtocolError(TransportError):
    """The server closed the connection early or sent something that is not HTTP/1.x."""


class DeadlinePassed(Exception):
    """The attempt ran past its whole-request deadline and was cut off."""


class Cancelled(Exception):
    """:meth:`Transport.cancel` was called: the attempt was stopped or never sent."""


@dataclass
class Response:
    """A whole answer: status, headers (names lower-cased) and body bytes."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Watchdog:
    """One daemon thread that runs each callback at its time (``time.monotonic()`` seconds) unless
    it was removed first. ``add`` and ``remove`` are O(log n); removed entries are dropped lazily."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, when: float, callback: Callable[[], None]) -> int:
        """Run ``callback`` at ``when`` (monotonic seconds); returns a handle for :meth:`remove`."""
        with self._cond:
            handle = next(self._ids)
            heapq.heappush(self._heap, (when, handle, callback))
            self._live.add(handle)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="miqa-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == handle:  # earlier than what the thread waits for
                self._cond.notify()
            return handle

    def remove(self, handle: int) -> None:
        """Forget a deadline (no-op once it ran)."""
        with self._cond:
            self._live.discard(handle)
            if len(self._heap) > 64 + 2 * len(self._live):  # mostly removed entries: compact
                self._heap = [e for e in self._heap if e[1] in self._live]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            due = self._next_due()
            try:
                due()
            except Exception:  # noqa: BLE001 - a failing callback must not stop the other deadlines
                pass

    def _next_due(self) -> Callable[[], None]:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                when, handle, callback = self._heap[0]
                wait_s = when - time.monotonic()
                if wait_s > 0:
                    self._cond.wait(min(wait_s, 3600.0))
                    continue
                heapq.heappop(self._heap)
                self._live.discard(handle)
                return callback


#: the process's one deadline thread (started on first use)
WATCHDOG = Watchdog()


class _Connection:
    """One socket to the server and its buffered reader."""

    __slots__ = ("sock", "reader")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=65536)

    def shut(self) -> None:
        """Shut the socket down: a thread blocked on it returns at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        for closable in (self.reader, self.sock):
            try:
                closable.close()
            except OSError:
                pass

    def stale(self) -> bool:
        """True when the idle connection has something to read: the server closed it (or misbehaved)."""
        try:
            if not hasattr(select, "poll"):  # Windows
                return bool(select.select([self.sock], [], [], 0)[0])
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True


class _Attempt:
    """One request in flight: the connection it uses and why it was stopped (if it was)."""

    __slots__ = ("lock", "conn", "aborted")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: _Connection | None = None
        self.aborted: str | None = None  # "deadline" or "cancelled"

    def attach(self, conn: _Connection) -> None:
        with self.lock:
            self.conn = conn
            aborted = self.aborted
        if aborted:
            conn.shut()

    def abort(self, why: str) -> None:
        with self.lock:
            if self.aborted is None:
                self.aborted = why
            conn = self.conn
        if conn is not None:
            conn.shut()


class Transport:
    """Keep-alive HTTP/1.1 to one server (``http`` or ``https`` base URL without userinfo)."""

    def __init__(self, base_url: str, headers: dict[str, str], watchdog: Watchdog = WATCHDOG) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        default_port = self.port == (443 if self.https else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._authority = host if default_port else f"{host}:{self.port}"
        self._proxy, proxy_auth = _env_proxy(parts.scheme, self.host)
        head = {"Host": self._authority, **headers}
        if self._proxy and not self.https:  # the proxy reads the whole URL; a tunnel needs neither
            self._target = f"http://{self._authority}"
            head.update({"Proxy-Authorization": proxy_auth} if proxy_auth else {})
        else:
            self._target = ""
        self._proxy_auth = proxy_auth
        self._target += quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self._head = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        self._watchdog = watchdog
        self._ssl: Any = None
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._open: set[_Attempt] = set()
        self._cancelled = False
        self._closed = False

    def request(self, method: str, path: str, body: bytes | None, *, deadline_s: float, connect_s: float) -> Response:
        """One attempt, answer read whole within ``deadline_s`` seconds (connecting within ``connect_s``).

        Raises :class:`TransportError` subclasses, :class:`DeadlinePassed` or :class:`Cancelled`.
        """
        attempt = _Attempt()
        with self._lock:
            if self._cancelled:
                raise Cancelled()
            self._open.add(attempt)
        handle = self._watchdog.add(time.monotonic() + deadline_s, lambda: attempt.abort("deadline"))
        conn: _Connection | None = None
        try:
            conn = self._connection(connect_s)
            attempt.attach(conn)
            response, reusable = self._exchange(conn, method, path, body)
        except (OSError, TransportError, ValueError) as exc:
            if conn is not None:  # a failed exchange leaves the connection in an unknown state
                conn.close()
            if attempt.aborted == "cancelled":
                raise Cancelled() from None
            if attempt.aborted == "deadline":
                raise DeadlinePassed() from None
            if isinstance(exc, TransportError):
                raise
            raise ReadError(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._watchdog.remove(handle)
            with self._lock:
                self._open.discard(attempt)
        self._put_back(conn, attempt, reusable)
        return response

    def cancel(self) -> None:
        """Stop every attempt in flight (its socket shut) and refuse later ones."""
        with self._lock:
            self._cancelled = True
            attempts = list(self._open)
        for attempt in attempts:
            attempt.abort("cancelled")

    def close(self) -> None:
        """Close the idle connections; attempts in flight close theirs when they end."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ------------------------------------------------------------------ internals
    def _connection(self, connect_s: float) -> _Connection:
        """An idle pooled connection that is still open, else a new one."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(connect_s)
            if not conn.stale():
                return conn
            conn.close()

    def _connect(self, connect_s: float) -> _Connection:
        if isinstance(self._proxy, str):
            raise ConnectError(self._proxy)
        host, port = self._proxy or (self.host, self.port)
        try:
            sock = socket.create_connection((host, port), timeout=connect_s)
        except socket.timeout:
            raise ConnectTimeout(f"no connection to {host}:{port} within {connect_s:g} s") from None
        except OSError as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._proxy and self.https:
                self._tunnel(sock)
            if self.https:
                sock = self._ssl_context().wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(None)  # blocking: the deadline thread ends a stuck read
        except OSError as exc:
            sock.close()
            raise ConnectError(f"{type(exc).__name__}: {exc}") from None
        return _Connection(sock)

    def _tunnel(self, sock: socket.socket) -> None:
        """Ask the proxy for a tunnel to the server (``CONNECT``); ConnectError unless it says 200."""
        auth = f"Proxy-Authorization: {self._proxy_auth}\r\n" if self._proxy_auth else ""
        sock.sendall(f"CONNECT {self._authority} HTTP/1.1\r\nHost: {self._authority}\r\n{auth}\r\n".encode("latin-1"))
        with sock.makefile("rb", buffering=0) as reader:  # unbuffered: the TLS bytes after it are not read here
            _, status, _ = _read_head(reader)
        if status != 200:
            raise ConnectError(f"the proxy answered HTTP {status} to CONNECT {self._authority}")

    def _ssl_context(self) -> Any:
        if self._ssl is None:
            import httpx  # its context: the same certificate checks as the httpx client had

            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _exchange(self, conn: _Connection, method: str, path: str, body: bytes | None) -> tuple[Response, bool]:
        """Send the request, read the answer: (response, whether the connection may be reused)."""
        head = f"{method} {self._target}/{path} HTTP/1.1\r\n{self._head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + (body or b"")
        try:
            conn.sock.sendall(data)
        except OSError as exc:
            raise WriteError(f"{type(exc).__name__}: {exc}") from None
        return _read_response(conn.reader, method)

    def _put_back(self, conn: _Connection | None, attempt: _Attempt, reusable: bool) -> None:
        with attempt.lock:  # a deadline that fired after the answer was read shut this socket
            reusable = reusable and attempt.aborted is None
            attempt.conn = None
        if conn is None:
            return
        with self._lock:
            if reusable and not (self._cancelled or self._closed):
                self._idle.append(conn)
                return
        conn.close()


def _env_proxy(scheme: str, host: str) -> tuple[tuple[str, int] | str | None, str | None]:
    """The proxy the environment names for ``scheme://host`` as (host, port), or a reason it cannot
    be used (str), or None; and its ``Proxy-Authorization`` value (basic, from its userinfo)."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or urllib.request.proxy_bypass_environment(host, proxies):
        return None, None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or not port:
        return f"the {scheme} proxy from the environment is not a usable http:// proxy URL", None
    auth = None
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(token).decode("ascii")
    return (parts.hostname, port), auth


def _read_line(reader: Any) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise RemoteProtocolError("header line too long")
    return line


def _read_head(reader: Any) -> tuple[bytes, int, dict[str, str]]:
    """Status line and headers of one answer, skipping 1xx interim answers."""
    while True:
        line = _read_line(reader)
        if not line:
            raise RemoteProtocolError("server disconnected without sending an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise RemoteProtocolError("answer is not HTTP/1.x")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            line = _read_line(reader)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise RemoteProtocolError("server disconnected in the headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise RemoteProtocolError("malformed header line")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        else:
            raise RemoteProtocolError("too many headers")
        status = int(parts[1])
        if not 100 <= status < 200:
            return parts[0], status, headers


def _read_exact(reader: Any, n: int) -> bytes:
    data = reader.read(n)
    if len(data) < n:
        raise RemoteProtocolError("server disconnected before the answer was complete")
    return data


def _read_chunked(reader: Any) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = _read_line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise RemoteProtocolError("malformed chunk size") from None
        if size == 0:
            while _read_line(reader) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        total += size
        if total > MAX_ANSWER_BYTES:
            raise RemoteProtocolError(f"answer over {MAX_ANSWER_BYTES} bytes")
        chunks.append(_read_exact(reader, size))
        _read_line(reader)


def _read_response(reader: Any, method: str) -> tuple[Response, bool]:
    """One answer from ``reader``: (response, whether the connection may carry another request)."""
    version, status, headers = _read_head(reader)
    keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"].split(",")[0])
        except ValueError:
            raise RemoteProtocolError("malformed Content-Length") from None
        if not 0 <= length <= MAX_ANSWER_BYTES:
            raise RemoteProtocolError(f"answer of {length} bytes (at most {MAX_ANSWER_BYTES})")
        body = _read_exact(reader, length)
    else:  # the answer ends when the server closes the connection
        body = reader.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise RemoteProtocolError(f"answer over {MAX_ANSWER_BYTES} bytes")
        keep = False
    return Response(status, headers, body), keep
