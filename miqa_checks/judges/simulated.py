"""Simulated judges: documented, planted behaviour, no model weights.

They exist to test the audit itself (does a planted defect fail the right cell, and only that
one?) and to let users try their own thresholds before spending GPU time. Pure numpy, fast
(about 0.1 ms per request plus a one-off ~0.3 ms per distinct image content).

Specs (``--miqa-model``)
------------------------
``sim-robust``
    A well-behaved judge. Passes every tolerance of the ``default`` profile.
``sim-paper``
    ``sim-robust`` plus the published average defects (PROTOCOL.md, "Headline results"):
    ``pixelation=-16.92`` (row "pixelation, mean score change over 16 VLMs": -20.58 %, a mean
    pooled over severities: -16.92 % per severity on top of the robust response pools to -20.58 %),
    ``attr=institution-world_class:17.15;infrastructure-old_device:-14.7`` (rows
    '"institution: world class" prompt vs none': +17.15 % and '"old device" prompt vs none':
    -14.7 %), ``inflate=samples_mr:31;mammo_calc:31;mammo_mass:31`` (row "corrupted
    mammography, some models: up to +31 %"; the embedded samples hold no mammography, so the MR
    sample stands in, next to the two MediMeta-C mammography sets).
``sim:<knob>=<value>,...``  (also ``sim-robust:<knobs>``, ``sim-paper:<knobs>`` to override a preset)
    ``sim-robust`` with knobs changed, e.g. ``sim:pixelation=-20,seed=2``,
    ``sim:inflate=samples_mr:31``, ``sim:attr=institution-world_class:17.15;infrastructure-old_device:-14.7``,
    ``sim:noise=0.05,nondeterminism=0.05,parse_fail=0.1``.

Knobs (defaults in brackets)
----------------------------
``<corruption>=<pct>`` [0]   one of brightness, contrast, gaussian_noise, impulse_noise, motion_blur,
                             pixelation, zoom_blur: extra multiplicative change in % at every severity
                             (on top of the robust response below).
``inflate=<dataset>:<pct>;...`` [none]  every corrupted image of that dataset scores pct % higher.
``attr=<attribute id>:<pct>;...`` [none]  bias when the prompt *text* contains that attribute's
                             phrase (prompts.ATTRIBUTES; detected in the prompt, not read from meta).
``paraphrase=<pct>`` [0]     bias when the prompt text contains one of prompts.PARAPHRASES.
``noise=<sd>`` [0.02]        per-request multiplicative Gaussian noise (SD 2 %), seeded from
                             (seed, dataset, image_id, condition, prompt_id) -- not from ``repeat``, so
                             the same request twice gives the same score.
``nondeterminism=<sd>`` [0]  extra multiplicative Gaussian noise that differs between the two copies
                             of a request (seeded from the request *and* its ``repeat``, so it breaks
                             repeatability while a request's score never depends on its batch or order).
``parse_fail=<rate>`` [0]    that fraction of requests (chosen by a seeded hash of the request)
                             returns parse_ok=False, score NaN, raw_text "I am unable to rate this image.".
``seed=<int>`` [the run seed, ``--miqa-seed``]
``latency_ms=<ms>`` [0]      each ``score`` call (one batch) is held that long without using the CPU
                             (a sleep, which releases the GIL the way a GPU kernel does): a stand-in
                             for a device-bound model in benchmarks. Answers do not change, so it
                             is not part of the identity.

Planted behaviour
-----------------
- Base score of a source image: ``1 + 4 q``, ``q = q0 + c`` in [0.35, 0.9]. ``q0`` in [0.40, 0.85]
  comes from a hash of (dataset, image_id, seed); ``c`` in [-0.02, 0.02] is a content term: the
  normalised gradient energy of the image's standardised 8 x 8 thumbnail (the same thumbnail the
  embeddings use), squashed by tanh. The judge only sees the request's pixels, so ``c`` is
  computed from them (cached per content hash); the thumbnail is contrast- and brightness-free
  and averages out pixel noise, so corruption moves ``c`` only a little.
- Robust response to corruption (``meta.condition`` = ``<corruption>-<severity>``): multiplicative
  change of 0, -1, -3, -6, -12 % at severities 1..5 for contrast, gaussian_noise, impulse_noise,
  motion_blur, pixelation, zoom_blur and the degrading medical corruptions (jpeg_compression,
  speckle_noise, shot_noise, gaussian_blur, defocus_blur, contrast_down); 0, 0, -0.5, -1, -1.5 %
  for brightness and brightness_down; 0, -0.5, -1, -2, -3 % for the local artefacts
  (stain_deposit, bubble, black_corner, characters); none for the other intensity changes
  (ROBUST_RESPONSE_PCT). Every corruption id is also a knob.
- score = base x robust x (1 + knob %) factors x (1 + noise z) x (1 + nondeterminism z'),
  clipped to [1, 5] (so a planted +31 % shows less on images that already score high).
- ``expected`` scoring returns ``probs`` over levels 1..5: a Gaussian bump (SD 0.6) around the
  score, exponentially tilted so that its mean equals the score exactly; ``score`` is that mean.
  ``generate`` returns raw_text ``f"{round(score)}/5"`` and the score parsed from it by the
  published rule (an integer).
- Embeddings (``request.embed``): the image (RGB averaged to grey) is standardised (minus mean,
  over std), area-downsampled to 8 x 8 and flattened: ``image_embedding`` (64,) float32;
  ``embedding`` = that vector through a fixed random projection (seed 0) to D = 32, float32.
  Contrast and brightness barely move it; noise and blur move it a little, more at higher
  severity. (A real judge pools image + prompt tokens; the simulated one uses the image only.)
"""

from __future__ import annotations

import hashlib
import math
import time
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ..errors import MiqaUsageError
from ..prompts import ATTRIBUTES, PARAPHRASES, parse_rating
from ..records import ScoreRequest, ScoreResult
from .base import SCORING_METHODS, Judge, JudgeSettings
from ..conditions import ids as corruption_ids

#: Judge behaviour version: enters identity(), so a change here never reuses cached scores.
SIM_VERSION = "simulated-v2"  # v2: nondeterminism keyed by the request, not drawn in order

CORRUPTIONS = corruption_ids("imagenet_c", "medical")  # the registry's built-in sets

_FALLS = (0.0, -1.0, -3.0, -6.0, -12.0)  # damage a quality judge must notice
_EXPOSURE = (0.0, 0.0, -0.5, -1.0, -1.5)  # exposure changes a reader windows back
_LOCAL = (0.0, -0.5, -1.0, -2.0, -3.0)  # artefacts over part of the image
_NEUTRAL = (0.0, 0.0, 0.0, 0.0, 0.0)  # intensity changes that need not lower quality
#: The robust response: multiplicative change in % at severities 1..5.
ROBUST_RESPONSE_PCT: dict[str, tuple[float, ...]] = {
    **{c: _FALLS for c in corruption_ids("imagenet_c")},
    "brightness": _EXPOSURE,
    **{c: _FALLS for c in ("jpeg_compression", "speckle_noise", "shot_noise", "gaussian_blur", "defocus_blur", "contrast_down")},
    "brightness_down": _EXPOSURE,
    **{c: _NEUTRAL for c in ("brightness_up", "contrast_up", "gamma_up", "gamma_down", "saturate")},
    **{c: _LOCAL for c in ("stain_deposit", "bubble", "black_corner", "characters")},
}

KNOBS = (*CORRUPTIONS, "inflate", "attr", "paraphrase", "noise", "nondeterminism", "parse_fail", "seed", "latency_ms")

PARSE_FAIL_TEXT = "I am unable to rate this image."

def pooled_knob(corruption: str, pooled_pct: float) -> float:
    """The per-severity knob whose change pooled over severities 1..5 (the paper's statistic),
    on top of the robust response, equals ``pooled_pct``. Rounded to 0.01 %."""
    robust = sum(1.0 + r / 100.0 for r in ROBUST_RESPONSE_PCT[corruption]) / 5.0
    return round(((1.0 + pooled_pct / 100.0) / robust - 1.0) * 100.0, 2)


PRESETS: dict[str, dict[str, Any]] = {
    "sim-robust": {},
    "sim-paper": {
        # -20.58 % pooled over the five severities, as published (knob -16.92 % per severity).
        "pixelation": pooled_knob("pixelation", -20.58),
        "attr": {"institution-world_class": 17.15, "infrastructure-old_device": -14.7},
        "inflate": {"samples_mr": 31.0, "mammo_calc": 31.0, "mammo_mass": 31.0},
    },
}

EMBED_DIM = 32
THUMB = 8
_PROBS_SD = 0.6
_LEVELS = np.arange(1.0, 6.0)
_ONES3 = np.ones(3, np.float32)
#: Thumbnail and content term per image content, shared by every simulated judge in the process
#: (a pure function of the pixels, so seeded runs over the same images reuse it).
_THUMB_CACHE: dict[bytes, tuple[np.ndarray, float]] = {}
_PROJECTION = (np.random.default_rng(0).standard_normal((EMBED_DIM, THUMB * THUMB)) / THUMB).astype(np.float32)


def _defaults(seed: int) -> dict[str, Any]:
    d: dict[str, Any] = {c: 0.0 for c in CORRUPTIONS}
    d.update(inflate={}, attr={}, paraphrase=0.0, noise=0.02, nondeterminism=0.0, parse_fail=0.0, seed=int(seed), latency_ms=0.0)
    return d


def _usage(spec: str, msg: str) -> MiqaUsageError:
    return MiqaUsageError(
        f"simulated judge {spec!r}: {msg}. Knobs: {', '.join(KNOBS)} "
        "(e.g. sim:pixelation=-20,seed=2; sim:inflate=samples_mr:31; "
        "sim:attr=institution-world_class:17.15;infrastructure-old_device:-14.7; "
        "sim:noise=0.05,nondeterminism=0.05,parse_fail=0.1). Presets: sim-robust, sim-paper."
    )


def _float(spec: str, knob: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _usage(spec, f"knob {knob!r} needs a number, got {text!r}") from None
    if not math.isfinite(v):
        raise _usage(spec, f"knob {knob!r} needs a finite number, got {text!r}")
    return v


def _pct(spec: str, knob: str, text: str) -> float:
    v = _float(spec, knob, text)
    if v <= -100.0:
        raise _usage(spec, f"knob {knob!r} is a % change and must be > -100, got {text!r}")
    return v


def _pairs(spec: str, knob: str, text: str, valid: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(";"))):
        key, sep, val = item.rpartition(":")
        if not sep or not key:
            raise _usage(spec, f"knob {knob!r} takes <name>:<pct>;..., got {item!r}")
        if valid is not None and key not in valid:
            raise _usage(spec, f"knob {knob!r}: unknown attribute {key!r} (known: {', '.join(valid)})")
        out[key] = _pct(spec, knob, val)
    return out


def parse_spec(spec: str, default_seed: int = 0) -> tuple[str, dict[str, Any]]:
    """``spec`` -> (preset name, knob values). Raises MiqaUsageError naming the bad knob."""
    head, sep, rest = spec.partition(":")
    if head == "sim":
        if not sep:
            raise _usage(spec, "write sim:<knob>=<value>,... or use a preset")
        preset = "sim-robust"
    elif head in PRESETS:
        preset = head
    else:
        raise _usage(spec, f"unknown preset {head!r}")
    knobs = _defaults(default_seed)
    knobs.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()})
    for part in filter(None, (p.strip() for p in rest.split(","))):
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not eq:
            raise _usage(spec, f"{part!r} is not <knob>=<value>")
        if name in CORRUPTIONS:
            knobs[name] = _pct(spec, name, value)
        elif name == "inflate":
            knobs[name] = _pairs(spec, name, value, None)
        elif name == "attr":
            knobs[name] = _pairs(spec, name, value, list(ATTRIBUTES))
        elif name == "paraphrase":
            knobs[name] = _pct(spec, name, value)
        elif name in ("noise", "nondeterminism"):
            v = _float(spec, name, value)
            if not 0.0 <= v <= 1.0:
                raise _usage(spec, f"knob {name!r} is a relative SD in [0, 1], got {value!r}")
            knobs[name] = v
        elif name == "parse_fail":
            v = _float(spec, name, value)
            if not 0.0 <= v <= 1.0:
                raise _usage(spec, f"knob 'parse_fail' is a rate in [0, 1], got {value!r}")
            knobs[name] = v
        elif name == "latency_ms":
            v = _float(spec, name, value)
            if not 0.0 <= v <= 600_000.0:
                raise _usage(spec, f"knob 'latency_ms' is a time in ms in [0, 600000], got {value!r}")
            knobs[name] = v
        elif name == "seed":
            try:
                knobs[name] = int(value)
            except ValueError:
                raise _usage(spec, f"knob 'seed' needs an integer, got {value!r}") from None
        else:
            raise _usage(spec, f"unknown knob {name!r}")
    return preset, knobs


def canonical(knobs: dict[str, Any]) -> str:
    """Stable text of every knob in a fixed order (e.g. for identity())."""
    def num(v: float) -> str:
        return format(float(v), ".10g")

    parts = [f"{c}={num(knobs[c])}" for c in CORRUPTIONS]
    parts.append("inflate=" + ";".join(f"{k}:{num(v)}" for k, v in sorted(knobs["inflate"].items())))
    parts.append("attr=" + ";".join(f"{k}:{num(v)}" for k, v in sorted(knobs["attr"].items())))
    parts += [f"{k}={num(knobs[k])}" for k in ("paraphrase", "noise", "nondeterminism", "parse_fail")]
    parts.append(f"seed={int(knobs['seed'])}")
    return "sim:" + ",".join(parts)


# --------------------------------------------------------------------------- pixels


@lru_cache(maxsize=256)
def _blocks(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 8 x 8 area blocks of an h x w image: first row, first column, (8, 8) pixel counts."""
    re = np.linspace(0, h, THUMB + 1).round().astype(int)
    ce = np.linspace(0, w, THUMB + 1).round().astype(int)
    return re[:-1], ce[:-1], np.outer(np.diff(re), np.diff(ce))


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Standardised 8 x 8 area-downsampled grey thumbnail, flattened: float32 (64,).

    The grey image's mean and SD are taken as ``ndarray.std`` takes them (float32 sums), its
    deviations from the mean computed once for both; bit for bit the plain formulation."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        # = g.mean(axis=2) of the float32 image bit for bit (sums of uint8 are exact in float32 in
        # any order), one BLAS pass instead of three strided ones
        g = (arr.astype(np.float32).reshape(-1, 3) @ _ONES3).reshape(arr.shape[:2])
        g /= np.float32(3)
    else:
        g = np.asarray(image, dtype=np.float32)
        if g.ndim == 3:
            g = g.mean(axis=2)
    if g.ndim != 2:
        raise ValueError(f"image must be H x W or H x W x 3, got shape {np.shape(image)}")
    h, w = g.shape
    if h < THUMB or w < THUMB:
        g = np.repeat(np.repeat(g, -(-THUMB // h), axis=0), -(-THUMB // w), axis=1)
        h, w = g.shape
    d = g - g.mean(keepdims=True)
    sd = float(np.sqrt(np.float32(np.add.reduce(np.square(d), axis=None) / np.intp(d.size))))  # = g.std()
    if sd > 0:
        d /= sd
    rows, cols, area = _blocks(h, w)
    s = np.add.reduceat(np.add.reduceat(d, rows, axis=0), cols, axis=1)
    s /= area
    # standardise the thumbnail too: a finely textured image keeps a unit-scale thumbnail, so
    # pixel noise (which averages out in the blocks) stays small against the between-image spread
    s -= s.mean()
    ts = float(s.std())
    if ts > 1e-6:
        s /= ts
    return s.ravel().astype(np.float32)


def content_term(thumb: np.ndarray) -> float:
    """Small pixel-dependent part of q, in [-0.02, 0.02]: tanh of the thumbnail's gradient energy."""
    t = thumb.reshape(THUMB, THUMB).astype(float)
    var = float(t.var())
    if var <= 1e-12:
        return -0.02
    dr, dc = t[1:] - t[:-1], t[:, 1:] - t[:, :-1]  # np.diff along rows, columns
    ge = (np.add.reduce(dr * dr, axis=None) / dr.size + np.add.reduce(dc * dc, axis=None) / dc.size) / (2.0 * var)  # 0 smooth .. ~2 noise
    return 0.02 * math.tanh(2.0 * (ge - 0.5))


def _hash_u(*parts: object) -> tuple[float, float]:
    """Two independent uniforms in (0, 1) from a hash of the parts."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()
    a = int.from_bytes(h[:8], "little")
    b = int.from_bytes(h[8:], "little")
    return (a + 0.5) / 2.0**64, (b + 0.5) / 2.0**64


def _hash_normal(*parts: object) -> float:
    u1, u2 = _hash_u(*parts)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def level_probs(scores: np.ndarray) -> np.ndarray:
    """(m,) scores in [1, 5] -> (m, 5) distributions over levels 1..5 whose means equal the scores.

    Each row is a Gaussian bump around its score, exponentially tilted by ``theta`` found by 64
    bisection steps; the steps write into preallocated buffers (the work is per-call overhead on
    small arrays)."""
    s = np.clip(np.asarray(scores, dtype=float), 1.0, 5.0)
    logb = -((_LEVELS[None, :] - s[:, None]) ** 2) / (2 * _PROBS_SD**2)
    lo = np.full(s.shape, -80.0)
    hi = np.full(s.shape, 80.0)
    mid = np.empty(s.shape)
    up = np.empty(s.shape, dtype=bool)
    z = np.empty_like(logb)
    col = np.empty(s.shape + (1,))

    def dist(theta: np.ndarray) -> np.ndarray:
        """The tilted distributions, in ``z`` (overwritten by the next call)."""
        np.multiply(theta[:, None], _LEVELS[None, :], out=z)
        np.add(logb, z, out=z)
        np.maximum.reduce(z, axis=1, keepdims=True, out=col)
        np.subtract(z, col, out=z)
        np.exp(z, out=z)
        np.add.reduce(z, axis=1, keepdims=True, out=col)
        return np.divide(z, col, out=z)

    for _ in range(64):
        np.add(lo, hi, out=mid)
        mid /= 2
        np.less(dist(mid) @ _LEVELS, s, out=up)
        np.copyto(lo, mid, where=up)
        np.copyto(hi, mid, where=~up)
    p = dist((lo + hi) / 2).copy()
    edge_lo, edge_hi = s <= 1.0 + 1e-12, s >= 5.0 - 1e-12
    p[edge_lo] = np.eye(5)[0]
    p[edge_hi] = np.eye(5)[4]
    return p


# --------------------------------------------------------------------------- judge


class SimulatedJudge(Judge):
    """A judge with planted, documented behaviour (see the module docstring)."""

    def __init__(self, spec: str, settings: JudgeSettings | None = None) -> None:
        self.spec = spec
        self.settings = settings or JudgeSettings()
        if self.settings.method not in SCORING_METHODS:
            raise MiqaUsageError(f"scoring method {self.settings.method!r}: use one of {', '.join(SCORING_METHODS)}")
        self.preset, self.knobs = parse_spec(spec, self.settings.seed)
        self.seed = int(self.knobs["seed"])
        self._attr_phrases = [(ATTRIBUTES[a], pct) for a, pct in self.knobs["attr"].items()]
        self._para_texts = list(PARAPHRASES.values())

    # -- Judge API
    default_batch_size = 256

    @staticmethod
    def prepare_input(image: np.ndarray) -> tuple[np.ndarray, float]:
        """The pixel features the judge reads (thumbnail, content term): made ahead in the engine's
        preparation pool, a pure function of the pixels."""
        t = thumbnail(image)
        return t, content_term(t)

    def embedding_source(self) -> str:
        return "simulated"

    def identity(self) -> str:
        return f"{SIM_VERSION} {canonical(self.knobs)} method={self.settings.method}"

    def provenance(self) -> dict[str, str]:
        return {
            "spec": self.spec,
            "identity": self.identity(),
            "kind": "simulated",
            "preset": self.preset,
            "method": self.settings.method,
            "embeddings": self.embedding_source(),
        }

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if self.knobs["latency_ms"]:
            time.sleep(self.knobs["latency_ms"] / 1000.0)
        method = self.settings.method
        planned: list[tuple[int, float, np.ndarray | None]] = []
        results: list[ScoreResult | None] = [None] * len(requests)
        for i, req in enumerate(requests):
            try:
                thumb, score, failed = self._score_one(req)
            except Exception as exc:  # one bad item never sinks the batch
                results[i] = ScoreResult.failed(method, f"simulated judge: {type(exc).__name__}: {exc}")
                continue
            if failed:
                res = ScoreResult(score=math.nan, method=method, parse_ok=False, raw_text=PARSE_FAIL_TEXT)
                self._attach(res, req, thumb)
                results[i] = res
                continue
            planned.append((i, score, thumb))
        if planned:
            raw = np.array([s for _, s, _ in planned])
            if method == "expected":
                probs = level_probs(raw)
                means = probs @ _LEVELS
            for j, (i, s, thumb) in enumerate(planned):
                if method == "expected":
                    res = ScoreResult(score=float(means[j]), method=method, probs=tuple(float(x) for x in probs[j]))
                else:
                    text = f"{int(math.floor(s + 0.5))}/5"
                    val = parse_rating(text)
                    res = ScoreResult(score=float(val) if val is not None else math.nan, method=method,
                                      parse_ok=val is not None, raw_text=text)
                self._attach(res, requests[i], thumb)
                results[i] = res
        return [r for r in results if r is not None]

    # -- internals
    def _attach(self, res: ScoreResult, req: ScoreRequest, thumb: np.ndarray) -> None:
        if req.embed:
            res.image_embedding = thumb.copy()
            res.embedding = (_PROJECTION @ thumb).astype(np.float32)

    def _thumb(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        arr = np.ascontiguousarray(image)
        key = hashlib.blake2b(arr.tobytes(), digest_size=16, person=str(arr.shape).encode()[:16]).digest() + \
            str(arr.dtype).encode()
        hit = _THUMB_CACHE.get(key)
        if hit is None:
            t = thumbnail(arr)
            hit = (t, content_term(t))
            if len(_THUMB_CACHE) > 50_000:
                _THUMB_CACHE.clear()
            _THUMB_CACHE[key] = hit
        return hit

    def _score_one(self, req: ScoreRequest) -> tuple[np.ndarray, float, bool]:
        m = req.meta
        thumb, c = req.judge_input if req.judge_input is not None else self._thumb(req.image)
        k = self.knobs
        rid = (self.seed, m.dataset, m.image_id, m.condition, m.prompt_id)
        if k["parse_fail"] > 0 and _hash_u("parse_fail", *rid)[0] < k["parse_fail"]:
            return thumb, math.nan, True
        q0 = 0.40 + 0.45 * _hash_u("base", self.seed, m.dataset, m.image_id)[0]
        score = 1.0 + 4.0 * (q0 + c)
        factor = 1.0
        if m.condition != "clean":
            corr, _, sev = m.condition.rpartition("-")
            if corr in ROBUST_RESPONSE_PCT and sev.isdigit() and 1 <= int(sev) <= 5:
                factor *= 1.0 + ROBUST_RESPONSE_PCT[corr][int(sev) - 1] / 100.0
                factor *= 1.0 + k[corr] / 100.0
            elif corr in ROBUST_RESPONSE_PCT:
                factor *= 1.0 + k[corr] / 100.0
            if m.dataset in k["inflate"]:
                factor *= 1.0 + k["inflate"][m.dataset] / 100.0
        prompt = req.prompt
        for phrase, pct in self._attr_phrases:
            if phrase in prompt:
                factor *= 1.0 + pct / 100.0
        if k["paraphrase"] and any(t in prompt for t in self._para_texts):
            factor *= 1.0 + k["paraphrase"] / 100.0
        if k["noise"] > 0:
            factor *= 1.0 + k["noise"] * _hash_normal("noise", *rid)
        if k["nondeterminism"] > 0:
            factor *= 1.0 + k["nondeterminism"] * _hash_normal("nondeterminism", *rid, m.repeat)
        return thumb, float(min(5.0, max(1.0, score * factor))), False
