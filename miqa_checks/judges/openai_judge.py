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

Robustness: bounded concurrency (thread pool), retries with exponential backoff and jitter on
429 (``Retry-After`` honoured, capped), 5xx, timeouts, connection errors and malformed JSON.
After the last attempt the item becomes ``ScoreResult.failed(method, reason)``; other 4xx are
not retried. A server that cannot be reached at first use raises :class:`JudgeError`.

Environment:

==========================  =========  ==================================================
``MIQA_OPENAI_API_KEY``     unset      Bearer key (fallback ``OPENAI_API_KEY``); never logged
``MIQA_OPENAI_CONCURRENCY`` 4          simultaneous requests
``MIQA_OPENAI_RETRIES``     4          attempts per request (including the first)
``MIQA_OPENAI_TIMEOUT``     60         seconds per request
``MIQA_OPENAI_BACKOFF``     0.5        first backoff delay in seconds (doubles per attempt)
``MIQA_OPENAI_MAX_RETRY_AFTER`` 60     cap on a server's ``Retry-After`` in seconds
==========================  =========  ==================================================

The HTTP API gives no hidden states: ``embedding`` / ``image_embedding`` stay None.
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

from ..errors import JudgeError, MiqaUsageError
from ..prompts import parse_rating
from ..records import ScoreRequest, ScoreResult
from .base import SCORING_METHODS, Judge, JudgeSettings

logger = logging.getLogger(__name__)

SPEC_FORM = "openai:<base_url>#<model>, e.g. openai:http://127.0.0.1:8000/v1#tiny"
LEVELS = ("1", "2", "3", "4", "5")
TOP_LOGPROBS = 20
EXPECTED_MAX_TOKENS = 1
#: expected-mode responses without log-probabilities (and none with) before the judge stops asking
NO_LOGPROBS_GIVE_UP = 2
_BACKOFF_CAP_S = 10.0
_PROBE_CONNECT_S = 2.0
_PROBE_TRIES = 2


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


@dataclass(frozen=True)
class _Spec:
    base_url: str  # scheme://[user@]host[:port]/path, no trailing slash
    model: str
    display_url: str  # host:port/path, no credentials, no scheme
    safe_spec: str  # the spec without credentials in the URL


def parse_spec(spec: str) -> _Spec:
    """Split ``openai:<base_url>#<model>``; raise MiqaUsageError naming the expected form."""
    if not isinstance(spec, str) or not spec.startswith("openai:"):
        raise MiqaUsageError(f"not an OpenAI-compatible judge spec: {spec!r}; expected {SPEC_FORM}")
    rest = spec[len("openai:"):]
    base_url, sep, model = rest.partition("#")
    base_url = base_url.strip().rstrip("/")
    model = model.strip()
    if not sep or not model:
        raise MiqaUsageError(f"judge spec {spec!r} names no model after '#'; expected {SPEC_FORM}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MiqaUsageError(
            f"judge spec {spec!r} has no http(s) base URL with a host; expected {SPEC_FORM}"
        )
    if parts.query or parts.fragment:
        raise MiqaUsageError(f"judge spec {spec!r}: the base URL must not carry a query; expected {SPEC_FORM}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise MiqaUsageError(f"judge spec {spec!r} has an invalid port; expected {SPEC_FORM}") from None
    display = f"{parts.hostname}:{port}{parts.path}"
    safe = spec if "@" not in parts.netloc else f"openai:{parts.scheme}://{display}#{model}"
    return _Spec(base_url=base_url, model=model, display_url=display, safe_spec=safe)


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


class _Failure(Exception):
    """A request that failed for good (after retries, or not retryable); message is the reason."""


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
        self.concurrency: int = _env_number("MIQA_OPENAI_CONCURRENCY", 4, int, 1)
        self.max_attempts: int = _env_number("MIQA_OPENAI_RETRIES", 4, int, 1)
        self.timeout_s: float = _env_number("MIQA_OPENAI_TIMEOUT", 60.0, float, 0.001)
        self.backoff_s: float = _env_number("MIQA_OPENAI_BACKOFF", 0.5, float, 0.0)
        self.max_retry_after_s: float = _env_number("MIQA_OPENAI_MAX_RETRY_AFTER", 60.0, float, 0.0)
        key = os.environ.get("MIQA_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self.__key = key.strip()
        self._client: Any = None
        self._lock = threading.Lock()
        self._ready = False
        self._server_model_id: str | None = None
        self._server_models: list[str] = []
        self._rng = random.Random(settings.seed)
        self._warned_embed = False
        # counters (under _lock)
        self._n_requests = 0
        self._n_retries = 0
        self._n_failed_items = 0
        self._n_logprobs_yes = 0
        self._n_logprobs_no = 0

    def __repr__(self) -> str:
        return f"OpenAIJudge({self.spec!r}, method={self.settings.method!r})"

    # ------------------------------------------------------------------ secrets
    def _scrub(self, text: str) -> str:
        """Remove the API key (and any bearer token) from a text that may reach a log or report."""
        text = str(text)
        if self.__key:
            text = text.replace(self.__key, "***")
        return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)

    # ------------------------------------------------------------------ plumbing
    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                headers = {"Accept": "application/json"}
                if self.__key:
                    headers["Authorization"] = f"Bearer {self.__key}"
                self._client = httpx.Client(
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0)),
                    limits=httpx.Limits(
                        max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                    ),
                    follow_redirects=False,
                )
            return self._client

    def _ensure_ready(self) -> None:
        """Probe ``GET {base_url}/models`` once: unreachable -> JudgeError naming the URL."""
        if self._ready:
            return
        import httpx

        client = self._get_client()
        url = f"{self._spec.base_url}/models"
        last: Exception | None = None
        response = None
        for attempt in range(_PROBE_TRIES):
            try:
                response = client.get(
                    url, timeout=httpx.Timeout(min(self.timeout_s, 10.0), connect=min(self.timeout_s, _PROBE_CONNECT_S))
                )
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
                if attempt + 1 < _PROBE_TRIES:
                    time.sleep(0.3)
            except httpx.HTTPError as exc:  # reachable but odd (read timeout, protocol error): go on
                logger.warning("probe of %s failed (%s); going on", self._spec.display_url, self._scrub(exc))
                last = None
                break
        if response is None and last is not None:
            raise JudgeError(
                f"cannot reach the OpenAI-compatible server at {self._spec.base_url} "
                f"({type(last).__name__}: {self._scrub(last)}); is it running? (judge {self.spec})"
            )
        if response is not None:
            if response.status_code in (401, 403):
                raise JudgeError(
                    f"the server at {self._spec.base_url} refused the credentials (HTTP {response.status_code}); "
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
        import httpx

        client = self._get_client()
        url = f"{self._spec.base_url}/chat/completions"
        reason = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            retry_after = None
            with self._lock:
                self._n_requests += 1
            try:
                response = client.post(url, json=body)
            except httpx.TimeoutException:
                reason = f"timeout ({self.timeout_s:g} s)"
            except httpx.TransportError as exc:
                reason = f"connection error ({type(exc).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        data = response.json()
                        choice = data["choices"][0]
                        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
                            raise TypeError("no message")
                        return choice
                    except (ValueError, KeyError, IndexError, TypeError):
                        reason = "malformed JSON response"
                elif status == 429 or status >= 500:
                    reason = f"HTTP {status}"
                    if status == 429:
                        retry_after = self._retry_after(response.headers.get("Retry-After"))
                else:
                    detail = response.text[:200].replace("\n", " ")
                    raise _Failure(self._scrub(f"HTTP {status} (not retried): {detail}"))
            if attempt < self.max_attempts:
                delay = self._backoff(attempt, retry_after)
                with self._lock:
                    self._n_retries += 1
                logger.info(
                    "%s from %s (attempt %d/%d); retrying in %.2f s",
                    self._scrub(reason), self._spec.display_url, attempt, self.max_attempts, delay,
                )
                time.sleep(delay)
        raise _Failure(self._scrub(f"{reason} after {self.max_attempts} attempts"))

    def _messages(self, request: ScoreRequest) -> list[dict]:
        system = request.system_prompt if request.system_prompt is not None else self.settings.system_prompt
        messages: list[dict] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": encode_image_png(request.image)}},
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
        method = self.settings.method
        try:
            messages = self._messages(request)
        except Exception as exc:  # unusable image: a record, not a crash
            return ScoreResult.failed(method, self._scrub(f"cannot encode image: {exc}"))
        if request.embed and not self._warned_embed:
            self._warned_embed = True
            logger.warning("the OpenAI-compatible judge cannot return embeddings; they stay empty")
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
        self._ensure_ready()
        if len(requests) == 1 or self.concurrency == 1:
            return [self._score_safe(r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)), thread_name_prefix="miqa-openai") as pool:
            return list(pool.map(self._score_safe, requests))

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
            "spec": self._scrub(self._spec.safe_spec),
            "identity": self.identity(),
            "backend": "openai-compatible",
            "base_url": self._spec.display_url,
            "model": self._spec.model,
            "server_model_id": self._server_model_id or "",
            "method": self.settings.method,
            "server_logprobs": self.server_logprobs(),
            "embeddings": "unsupported",
            "concurrency": str(self.concurrency),
            "max_attempts": str(self.max_attempts),
            "timeout_s": f"{self.timeout_s:g}",
            "api_key": "set" if self.__key else "not set",
            "requests": str(stats["requests"]),
            "retries": str(stats["retries"]),
            "failed_items": str(stats["failed_items"]),
        }

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
