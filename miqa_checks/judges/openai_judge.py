"""Judge that talks to an OpenAI-compatible chat-completions server (``openai:<base_url>#<model>``).

Requests: ``POST {base_url}/chat/completions`` with an optional system message and one user
message holding the image (base64 PNG data URL; grey images are encoded as mode ``L`` so grey
stays grey, RGB as ``RGB``) and the prompt text; ``temperature`` 0.

Scoring:

``expected``
    Asks for ``logprobs: true, top_logprobs: 20`` and ``max_tokens`` = 1. When the response
    carries top log-probabilities for the first generated token, the level tokens ``"1"`` ..
    ``"5"`` found there (keys compared after stripping whitespace; duplicates that decode to
    the same level are combined with logsumexp) are soft-maxed among themselves; levels missing
    from the top list get probability 0. The score is the probability-weighted mean level.
    When the response has no log-probabilities, or none of the five levels is among them, the
    item falls back to ``generate`` (a second request) and ``ScoreResult.method`` says so.
    Once the server has answered two ``expected`` requests without log-probabilities and never
    with them, the judge stops asking and goes straight to ``generate`` (see ``provenance()``).
``generate``
    Greedy decoding with ``max_tokens`` = ``settings.max_new_tokens`` and the published parse
    rule (:func:`miqa_checks.prompts.parse_rating`). Unparsed text is kept in ``raw_text`` with
    ``parse_ok=False``.

Robustness: adaptive concurrency (``judges.concurrency``: starts at the cap, up to 64; halves on
429 / 503 / timeouts and backs off when latency rises; grows back by one per window of clean
answers). A request refused with 429 / 503 is retried as soon as one of the judge's requests in
flight finishes (the limit paces the server), ahead of new requests, or after the backoff delay
if none finishes; a ``Retry-After`` is honoured (capped) instead. 5xx, timeouts, connection
errors and malformed JSON are retried with exponential backoff and jitter.
After the last attempt the item becomes ``ScoreResult.failed(method, reason)``; other 4xx are
not retried. A server that cannot be reached at first use raises :class:`JudgeError`.

Environment:

==========================  =========  ==================================================
``MIQA_OPENAI_API_KEY``     unset      Bearer key (fallback ``OPENAI_API_KEY``); never logged
``MIQA_OPENAI_CONCURRENCY`` 64         most simultaneous requests (the adaptive limit's cap)
``MIQA_OPENAI_RETRIES``     4          attempts per request (including the first)
``MIQA_OPENAI_TIMEOUT``     60         seconds per request, whole (a trickling answer ends there)
``MIQA_OPENAI_BACKOFF``     0.5        first backoff delay in seconds (doubles per attempt)
``MIQA_OPENAI_MAX_RETRY_AFTER`` 60     cap on a server's ``Retry-After`` in seconds
==========================  =========  ==================================================

Time: each HTTP attempt has a whole-request deadline of ``MIQA_OPENAI_TIMEOUT`` (not per read:
a server that trickles one byte a second is cut off there), kept by one deadline thread for all
attempts (``judges.http_transport``). Connections are kept alive, one request at a time each; at
the deadline, or on :meth:`OpenAIJudge.cancel` (any thread, e.g. a SIGTERM handler), the
attempt's socket is shut down, the waiting thread returns at once and that connection is
discarded, never reused. ``https`` certificates are checked as httpx checks them (certifi,
``SSL_CERT_FILE``); ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` are honoured.

Embeddings: the chat API gives no hidden states. On first need the judge asks once whether
``POST {base_url}/embeddings`` embeds images for the same model (two small different images in
the chat ``messages`` form that vLLM and others accept; the answer must be two finite vectors of
one length that differ). If so, ``embedding`` comes from there (``provenance()["embeddings"]`` is
``endpoint``); otherwise it stays None (``none``) and the properties that need embeddings are
not applicable.

Credentials: userinfo in the base URL (``http://user:pw@host``) is sent as HTTP basic auth and
never shown: labels, messages and provenance use ``host:port/path`` only.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import JudgeError, MiqaUsageError
from ..prompts import parse_rating
from ..records import ScoreRequest, ScoreResult
from . import http_transport as http
from .concurrency import AdaptiveLimit
from .base import SCORING_METHODS, Judge, JudgeCancelled, JudgeSettings
from .spec import OPENAI_FORM, ModelSpec, parse_model_spec

logger = logging.getLogger(__name__)

SPEC_FORM = OPENAI_FORM
LEVELS = ("1", "2", "3", "4", "5")
TOP_LOGPROBS = 20
EXPECTED_MAX_TOKENS = 1
#: expected-mode responses without log-probabilities (and none with) before the judge stops asking
NO_LOGPROBS_GIVE_UP = 2
_BACKOFF_CAP_S = 10.0
_PROBE_CONNECT_S = 2.0
_PROBE_TRIES = 2
_EMBED_PROBE_S = 30.0


def _env_number(name: str, default: float, kind: type, minimum: float) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise MiqaUsageError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value < minimum or (isinstance(value, float) and not math.isfinite(value)):
        raise MiqaUsageError(f"{name}={raw!r} must be >= {minimum}")
    return value


def parse_spec(spec: str) -> ModelSpec:
    """``openai:<base_url>#<model>`` -> its :class:`ModelSpec` (base_url, model, display_url, safe_spec);
    MiqaUsageError naming the expected form. The URL ends at the first ``#``."""
    if not isinstance(spec, str) or not spec.startswith("openai:"):
        raise MiqaUsageError(f"not an OpenAI-compatible judge spec: {spec!r}; expected {SPEC_FORM}")
    parsed = parse_model_spec(spec)
    if parsed.kind != "openai" or parsed.name is not None:
        raise MiqaUsageError(f"not an OpenAI-compatible judge spec: {parsed.safe!r}; expected {SPEC_FORM}")
    return parsed


def encode_image_png(image: Any) -> str:
    """uint8 H x W (-> PNG mode L) or H x W x 3 (-> RGB) as a ``data:image/png;base64,`` URL."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image dtype {arr.dtype} is not uint8")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(arr), mode="L")
    elif arr.ndim == 3 and arr.shape[2] == 3:
        pil = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    else:
        raise ValueError(f"image shape {arr.shape} is neither H x W nor H x W x 3")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _data_url(request: ScoreRequest) -> str:
    """The request's image as a data URL: made ahead by the engine, else here."""
    made = request.judge_input
    return made if isinstance(made, str) and made.startswith("data:image/png;base64,") else encode_image_png(request.image)


#: characters a JSON string holds as they are (printable ASCII but the quote and the backslash)
_JSON_PLAIN = bytes(range(0x20, 0x7F)).replace(b'"', b"").replace(b"\\", b"")
#: marks where an image data URL goes back into the encoded body (no prompt holds it)
_SPLICE = f"\x00miqa-image-{os.getpid()}-{random.getrandbits(64):016x}-"


def json_bytes(body: dict) -> bytes:
    """``json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()``, but the image data
    URLs of ``body["messages"]`` that need no escaping (base64: all of ours) are spliced in as they
    are instead of being scanned by the encoder (about 80 us for a 224 x 224 image's 25 kB)."""
    urls: list[str] = []

    def swap(part: Any) -> Any:
        url = part.get("image_url", {}).get("url") if isinstance(part, dict) and part.get("type") == "image_url" else None
        if not (isinstance(url, str) and url.isascii() and not url.encode("ascii").translate(None, _JSON_PLAIN)):
            return part
        urls.append(url)
        return {**part, "image_url": {**part["image_url"], "url": f"{_SPLICE}{len(urls) - 1}"}}

    messages = [
        {**m, "content": [swap(p) for p in m["content"]]} if isinstance(m, dict) and isinstance(m.get("content"), list) else m
        for m in body.get("messages") or []
    ]
    text = json.dumps({**body, "messages": messages} if messages else body, ensure_ascii=False, separators=(",", ":"))
    mark = json.dumps(_SPLICE)[1:-1]
    for i, url in enumerate(urls):
        text = text.replace(f"{mark}{i}\"", f"{url}\"", 1)
    return text.encode()


def _top_logprob_entries(choice: dict) -> list[tuple[str, float]] | None:
    """(token text, logprob) pairs for the first generated token, or None when absent.

    Accepts the chat format (``logprobs.content[0].top_logprobs`` as a list of
    ``{"token", "logprob"}`` or a dict) and the legacy completions format
    (``logprobs.top_logprobs[0]`` as a dict token -> logprob).
    """
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    first: Any = None
    content = lp.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0].get("top_logprobs")
    elif isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"]:
        first = lp["top_logprobs"][0]
    pairs: list[tuple[str, float]] = []
    if isinstance(first, dict):
        items = first.items()
    elif isinstance(first, list):
        items = [
            (e.get("token"), e.get("logprob")) for e in first if isinstance(e, dict)
        ]
    else:
        return None
    for token, logprob in items:
        if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, (int, float)):
            continue
        pairs.append((token, float(logprob)))
    return pairs if pairs else None


def level_probs(entries: Sequence[tuple[str, float]]) -> tuple[float, ...] | None:
    """Softmax over the level tokens among ``entries``: P(level 1..5), or None if no level is there.

    Tokens are compared after stripping whitespace; several entries for the same level are
    combined with logsumexp; levels absent from the list get probability 0.
    """
    per_level: dict[int, list[float]] = {}
    for token, logprob in entries:
        text = token.strip()
        if text in LEVELS and not math.isnan(logprob) and logprob != -math.inf:
            per_level.setdefault(int(text), []).append(logprob)
    if not per_level:
        return None
    combined = {}
    for level, lps in per_level.items():
        m = max(lps)
        combined[level] = m + math.log(sum(math.exp(v - m) for v in lps))
    top = max(combined.values())
    z = sum(math.exp(v - top) for v in combined.values())
    return tuple(math.exp(combined[k] - top) / z if k in combined else 0.0 for k in range(1, 6))


T = TypeVar("T")


def _first_choice(data: Any) -> dict:
    """The first choice of a chat-completions answer (a dict with ``message``); TypeError if absent."""
    choice = data["choices"][0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise TypeError("no message")
    return choice


def _vector(data: Any) -> Any:
    """The first embedding of an ``/embeddings`` answer: float32 (D,), D >= 2, finite; TypeError if not."""
    import numpy as np

    values = data["data"][0]["embedding"]
    if not isinstance(values, list) or len(values) < 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise TypeError("no embedding vector")
    vector = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(vector)):
        raise TypeError("non-finite embedding")
    return vector


class _Failure(Exception):
    """A request that failed for good (after retries, or not retryable); message is the reason."""


#: refusals (429 / 503 without Retry-After) of one request retried when a slot frees without
#: spending one of its attempts: an overloaded server refuses some requests many times in a row
MAX_PACED_REFUSALS = 16


class OpenAIJudge(Judge):
    """OpenAI-compatible HTTP judge. Construction is cheap; the server is probed on first use."""

    def __init__(self, spec: str, settings: JudgeSettings) -> None:
        self.spec = spec
        self.settings = settings
        self._spec = parse_spec(spec)
        if settings.method not in SCORING_METHODS:
            raise MiqaUsageError(
                f"unknown scoring method {settings.method!r}; choose one of {', '.join(SCORING_METHODS)}"
            )
        self.concurrency: int = _env_number("MIQA_OPENAI_CONCURRENCY", 64, int, 1)
        self._limit = AdaptiveLimit(self.concurrency)
        self.max_attempts: int = _env_number("MIQA_OPENAI_RETRIES", 4, int, 1)
        self.timeout_s: float = _env_number("MIQA_OPENAI_TIMEOUT", 60.0, float, 0.001)
        self.backoff_s: float = _env_number("MIQA_OPENAI_BACKOFF", 0.5, float, 0.0)
        self.max_retry_after_s: float = _env_number("MIQA_OPENAI_MAX_RETRY_AFTER", 60.0, float, 0.0)
        key = os.environ.get("MIQA_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self.__key = key.strip()
        self.__secrets = self._url_secrets(self._spec.base_url)
        # requests go to the URL without userinfo; userinfo becomes basic auth
        parts = urlsplit(self._spec.base_url)
        self._url = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        self.__userinfo = parts.netloc.rpartition("@")[0]
        self._cancelled = threading.Event()
        self._embed_source: str | None = None
        self._embed_lock = threading.Lock()
        self._transport: http.Transport | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._ready = False
        self._server_model_id: str | None = None
        self._server_models: list[str] = []
        self._rng = random.Random(settings.seed)
        # counters (under _lock)
        self._n_requests = 0
        self._n_retries = 0
        self._n_failed_items = 0
        self._n_logprobs_yes = 0
        self._n_logprobs_no = 0

    def __repr__(self) -> str:
        return f"OpenAIJudge({self._spec.safe_spec!r}, method={self.settings.method!r})"

    # ------------------------------------------------------------------ secrets
    @staticmethod
    def _url_secrets(base_url: str) -> tuple[str, ...]:
        """The base URL's userinfo, password and basic-auth token (4+ characters), longest first."""
        parts = urlsplit(base_url)
        userinfo = parts.netloc.rpartition("@")[0]
        if not userinfo:
            return ()
        user, _, password = userinfo.partition(":")
        basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        found = {userinfo, password, unquote(password), basic}
        return tuple(sorted((x for x in found if len(x) >= 4), key=len, reverse=True))

    def _scrub(self, text: str) -> str:
        """Remove the API key, URL credentials and any bearer / basic token from a text that may
        reach a log or report."""
        text = str(text)
        for secret in (self.__key, *self.__secrets):
            if secret:
                text = text.replace(secret, "***")
        return re.sub(r"(?i)\b(bearer|basic)(\s+)\S+", r"\1\2***", text)

    # ------------------------------------------------------------------ plumbing
    def _get_transport(self) -> http.Transport:
        with self._lock:
            if self._transport is None:
                headers = {"Accept": "application/json"}
                if self.__userinfo:  # basic auth wins over a key, as it did with httpx
                    user, _, password = self.__userinfo.partition(":")
                    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
                    headers["Authorization"] = f"Basic {token}"
                elif self.__key:
                    headers["Authorization"] = f"Bearer {self.__key}"
                self._transport = http.Transport(self._url, headers)
                if self._cancelled.is_set():  # cancel() ran before there was a transport to stop
                    self._transport.cancel()
            return self._transport

    def _send(self, method: str, path: str, body: bytes | None, *, deadline_s: float,
              connect_s: float | None = None) -> http.Response:
        """One HTTP attempt, read whole within ``deadline_s`` seconds: the response.

        Raises :class:`http.TransportError`, :class:`http.DeadlinePassed` when the deadline cut it
        off, and JudgeCancelled after :meth:`cancel`.
        """
        transport = self._get_transport()
        try:
            return transport.request(method, path, body, deadline_s=deadline_s,
                                     connect_s=connect_s if connect_s is not None else min(deadline_s, 10.0))
        except http.Cancelled:
            raise JudgeCancelled(f"judge {self._spec.safe_spec} was cancelled") from None

    def _ensure_ready(self) -> None:
        """Probe ``GET {base_url}/models`` once: unreachable -> JudgeError naming the server."""
        if self._ready:
            return
        last: Exception | None = None
        response = None
        for attempt in range(_PROBE_TRIES):
            try:
                response = self._send("GET", "models", None, deadline_s=min(self.timeout_s, 10.0),
                                      connect_s=min(self.timeout_s, _PROBE_CONNECT_S))
                break
            except http.ConnectError as exc:
                last = exc
                if attempt + 1 < _PROBE_TRIES and self._cancelled.wait(0.3):
                    raise JudgeCancelled(f"judge {self._spec.safe_spec} was cancelled") from None
            except (http.TransportError, http.DeadlinePassed) as exc:  # reachable but odd (slow, protocol error): go on
                logger.warning("probe of %s failed (%s); going on", self._spec.display_url, self._scrub(repr(exc)))
                last = None
                break
        if response is None and last is not None:
            raise JudgeError(
                f"cannot reach the OpenAI-compatible server at {self._spec.display_url} "
                f"({type(last).__name__}: {self._scrub(last)}); is it running? (judge {self._spec.safe_spec})"
            )
        if response is not None:
            if response.status_code in (401, 403):
                raise JudgeError(
                    f"the server at {self._spec.display_url} refused the credentials (HTTP {response.status_code}); "
                    "set MIQA_OPENAI_API_KEY (or OPENAI_API_KEY)"
                )
            if response.status_code == 200:
                try:
                    data = response.json().get("data") or []
                    self._server_models = [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")]
                except (ValueError, AttributeError):
                    self._server_models = []
                if self._spec.model in self._server_models:
                    self._server_model_id = self._spec.model
                elif len(self._server_models) == 1:
                    self._server_model_id = self._server_models[0]
                if self._server_models and self._spec.model not in self._server_models:
                    logger.warning(
                        "model %r is not among the models listed by %s (%s)",
                        self._spec.model, self._spec.display_url, ", ".join(self._server_models[:5]),
                    )
        self._ready = True

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(_BACKOFF_CAP_S, self.backoff_s * (2 ** (attempt - 1)))
        delay *= 0.5 + self._rng.random()  # jitter in [0.5, 1.5)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    @staticmethod
    def _retry_after(value: str | None) -> float | None:
        if not value:
            return None
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - time.time())

    def _post(self, body: dict) -> dict:
        """POST chat/completions with retries; return the first choice (dict with ``message``)."""
        return self._request_json("chat/completions", body, _first_choice)

    def _request_json(self, path: str, body: dict, extract: Callable[[Any], T], attempts: int | None = None) -> T:
        """POST ``path`` with retries; ``extract`` reads the JSON answer (raising ValueError, KeyError,
        IndexError or TypeError when it is malformed, which is retried). Raises _Failure for good."""
        attempts = attempts or self.max_attempts
        data = json_bytes(body)
        reason = "no attempt"
        refused_wait_s: float | None = None  # after a refusal without Retry-After
        paced = 0  # refusals retried when a slot freed: paced by the limit, not counted as attempts
        attempt = 0
        while attempt < attempts:
            attempt += 1
            retry_after, refused = None, False
            with self._lock:
                self._n_requests += 1
            try:
                response = self._limited_send(path, data, refused_wait_s)
            except http.DeadlinePassed:
                reason = f"timeout ({self.timeout_s:g} s)"
            except http.TransportError as exc:
                reason = f"connection error ({type(exc).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return extract(response.json())
                    except (ValueError, KeyError, IndexError, TypeError):
                        reason = "malformed JSON response"
                elif status == 429 or status >= 500:
                    reason = f"HTTP {status}"
                    if status in (429, 503):
                        refused = True
                        retry_after = self._retry_after(response.headers.get("retry-after"))
                else:
                    detail = response.text[:200].replace("\n", " ")
                    raise _Failure(self._scrub(f"HTTP {status} (not retried): {detail}"))
            if refused and retry_after is None and paced < MAX_PACED_REFUSALS:
                paced += 1
                attempt -= 1
            if attempt < attempts:
                delay = self._backoff(max(1, attempt), retry_after)
                with self._lock:
                    self._n_retries += 1
                refused_wait_s = delay if refused and retry_after is None else None
                if refused_wait_s is not None:  # the limit paces it: retry when a request in flight finishes
                    logger.info("%s from %s (attempt %d/%d); retrying when a slot frees (at most %.2f s)",
                                reason, self._spec.display_url, attempt, attempts, delay)
                    continue
                logger.info(
                    "%s from %s (attempt %d/%d); retrying in %.2f s",
                    self._scrub(reason), self._spec.display_url, attempt, attempts, delay,
                )
                if self._cancelled.wait(delay):
                    raise JudgeCancelled(f"judge {self._spec.safe_spec} was cancelled")
        raise _Failure(self._scrub(f"{reason} after {attempts} attempts"))

    def _limited_send(self, path: str, body: bytes, refused_wait_s: float | None = None) -> http.Response:
        """POST within the adaptive concurrency limit; tells the limit how the server coped.
        ``refused_wait_s``: the last attempt was refused (see :meth:`AdaptiveLimit.acquire`)."""
        if not self._limit.acquire(self._cancelled, refused_wait_s=refused_wait_s):
            raise JudgeCancelled(f"judge {self._spec.safe_spec} was cancelled")
        start = time.monotonic()
        latency, overloaded = None, True  # a timeout or a cut connection counts as overload
        try:
            response = self._send("POST", path, body, deadline_s=self.timeout_s)
            overloaded = response.status_code in (429, 503)
            latency = time.monotonic() - start if response.status_code == 200 else None
            return response
        except JudgeCancelled:
            overloaded = False
            raise
        finally:
            self._limit.release(latency_s=latency, overloaded=overloaded)

    #: made ahead in the engine's preparation pool: the image's data URL
    prepare_input = staticmethod(encode_image_png)

    def _messages(self, request: ScoreRequest) -> list[dict]:
        system = request.system_prompt if request.system_prompt is not None else self.settings.system_prompt
        messages: list[dict] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_url(request)}},
                    {"type": "text", "text": request.prompt},
                ],
            }
        )
        return messages

    def _body(self, messages: list[dict], expected: bool) -> dict:
        body: dict[str, Any] = {"model": self._spec.model, "messages": messages, "temperature": 0}
        if expected:
            body.update(max_tokens=EXPECTED_MAX_TOKENS, logprobs=True, top_logprobs=TOP_LOGPROBS)
        else:
            body["max_tokens"] = int(self.settings.max_new_tokens)
        return body

    @staticmethod
    def _text(choice: dict) -> str:
        content = choice.get("message", {}).get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # list of parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return ""

    def _skip_expected(self) -> bool:
        with self._lock:
            return self._n_logprobs_yes == 0 and self._n_logprobs_no >= NO_LOGPROBS_GIVE_UP

    def _score_one(self, request: ScoreRequest) -> ScoreResult:
        try:
            messages = self._messages(request)
        except Exception as exc:  # unusable image: a record, not a crash
            return ScoreResult.failed(self.settings.method, self._scrub(f"cannot encode image: {exc}"))
        result = self._rate(messages)
        if request.embed and result.error is None and self.embedding_source() == "endpoint":
            try:
                result.embedding = self._request_json("embeddings", self._embed_body(messages), _vector)
            except _Failure as exc:  # the cell reports the missing embedding
                logger.warning("no embedding from %s: %s", self._spec.display_url, exc)
        return result

    def _rate(self, messages: list[dict]) -> ScoreResult:
        method = self.settings.method
        if method == "expected" and not self._skip_expected():
            try:
                choice = self._post(self._body(messages, expected=True))
            except _Failure as exc:
                return ScoreResult.failed("expected", str(exc))
            entries = _top_logprob_entries(choice)
            with self._lock:
                if entries is None:
                    self._n_logprobs_no += 1
                else:
                    self._n_logprobs_yes += 1
            probs = level_probs(entries) if entries else None
            if probs is not None:
                score = float(sum(p * k for p, k in zip(probs, range(1, 6))))
                return ScoreResult(score=score, method="expected", probs=probs)
        try:
            choice = self._post(self._body(messages, expected=False))
        except _Failure as exc:
            return ScoreResult.failed("generate", str(exc))
        text = self._text(choice)
        rating = parse_rating(text)
        if rating is None:
            return ScoreResult(score=float("nan"), method="generate", parse_ok=False, raw_text=text)
        return ScoreResult(score=rating, method="generate", raw_text=text)

    def _score_safe(self, request: ScoreRequest) -> ScoreResult:
        try:
            result = self._score_one(request)
        except Exception as exc:  # a bug or an odd response must not end the run
            logger.warning("unexpected error scoring one item: %s", self._scrub(repr(exc)))
            result = ScoreResult.failed(self.settings.method, self._scrub(f"unexpected error: {exc!r}"))
        if result.error is not None:
            with self._lock:
                self._n_failed_items += 1
        return result

    # ------------------------------------------------------------------ Judge API
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        if not requests:
            return []
        if self._cancelled.is_set():
            raise JudgeCancelled(f"judge {self._spec.safe_spec} was cancelled")
        self._ensure_ready()
        if len(requests) == 1 or self.concurrency == 1:
            return [self._score_safe(r) for r in requests]
        pool, futures = self._workers(), []
        try:
            for request in requests:
                futures.append(pool.submit(self._score_safe, request))
            pending = set(futures)
            while pending:  # short waits: a signal handler (Ctrl-C, SIGTERM) runs in this thread promptly
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                failed = next((f.exception() for f in done if f.exception() is not None), None)
                if failed is not None:  # JudgeCancelled: _score_safe turns everything else into a result
                    raise failed
            return [f.result() for f in futures]
        except BaseException:  # interrupted or cancelled: stop the requests in flight, not wait for them
            self.cancel()
            for future in futures:  # the pending items are not sent
                future.cancel()
            wait(futures)  # the ones in flight end at once: their sockets were shut
            raise

    def _workers(self) -> ThreadPoolExecutor:
        """The judge's worker threads, kept from batch to batch (started as needed, up to the cap)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="miqa-openai")
            return self._pool

    @property
    def default_batch_size(self) -> int:
        """Four waves of ``MIQA_OPENAI_CONCURRENCY`` requests: one slow answer stalls a quarter batch."""
        return 4 * self.concurrency

    def embedding_source(self) -> str:
        """``endpoint`` when ``/embeddings`` embeds images for this model (asked once), else ``none``."""
        with self._embed_lock:
            if self._embed_source is None:
                self._embed_source = self._probe_embeddings()
            return self._embed_source

    def _embed_body(self, messages: list[dict]) -> dict:
        return {"model": self._spec.model, "messages": messages, "encoding_format": "float"}

    def _probe_embeddings(self) -> str:
        """Embed two different small images once; ``endpoint`` only for two finite, equal-length,
        different vectors."""
        import numpy as np

        self._ensure_ready()
        vectors = []
        for level in (0, 255):
            image = np.full((16, 16), level, dtype=np.uint8)
            image[::4, ::4] = 128
            messages = [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": encode_image_png(image)}},
                {"type": "text", "text": "Describe the image."},
            ]}]
            try:
                vectors.append(self._request_json("embeddings", self._embed_body(messages), _vector, attempts=1))
            except _Failure as exc:
                logger.info("%s gives no image embeddings (%s): embedding properties are not applicable",
                            self._spec.display_url, exc)
                return "none"
        first, second = vectors
        if first.shape != second.shape or np.array_equal(first, second):
            logger.info("%s/embeddings ignores the image: embedding properties are not applicable", self._spec.display_url)
            return "none"
        return "endpoint"

    def cancel(self) -> None:
        """Stop waiting now: shut every in-flight request's socket; this and later ``score`` calls
        raise JudgeCancelled (pending items of a batch are not sent)."""
        self._cancelled.set()
        with self._lock:
            transport = self._transport
        if transport is not None:
            transport.cancel()

    def identity(self) -> str:
        self._ensure_ready()
        served = self._server_model_id or "?"
        return f"openai:{self._spec.display_url}#{self._spec.model}|served={served}|method={self.settings.method}"

    def server_logprobs(self) -> str:
        """``yes``, ``no``, ``partial`` (some responses had them) or ``unknown`` (not asked yet)."""
        with self._lock:
            yes, no = self._n_logprobs_yes, self._n_logprobs_no
        if yes and no:
            return "partial"
        return "yes" if yes else "no" if no else "unknown"

    def stats(self) -> dict[str, int]:
        """HTTP request, retry and failed-item counts so far."""
        with self._lock:
            return {"requests": self._n_requests, "retries": self._n_retries, "failed_items": self._n_failed_items}

    def provenance(self) -> dict[str, str]:
        stats = self.stats()
        return {
            "spec": self._spec.safe_spec,
            "identity": self.identity(),
            "backend": "openai-compatible",
            "base_url": self._spec.display_url,
            "model": self._spec.model,
            "server_model_id": self._server_model_id or "",
            "method": self.settings.method,
            "server_logprobs": self.server_logprobs(),
            "embeddings": self._embed_source or "not asked",
            "concurrency": str(self.concurrency),
            "concurrency_limit_now": str(self._limit.limit),
            "max_attempts": str(self.max_attempts),
            "timeout_s": f"{self.timeout_s:g}",
            "api_key": "set" if self.__key else "not set",
            "requests": str(stats["requests"]),
            "retries": str(stats["retries"]),
            "failed_items": str(stats["failed_items"]),
        }

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if transport is not None:
            transport.close()
