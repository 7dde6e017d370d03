"""The simulated judge's pixel features (thumbnail, content term) and its level distributions: the
fast formulations give the plain ones' values bit for bit (scores, probabilities and embeddings of
stored runs do not move)."""

from __future__ import annotations

import math

import numpy as np

from miqa_checks import conditions as C
from miqa_checks.data import load_all
from miqa_checks.judges import simulated as S


def _plain_thumbnail(image: np.ndarray) -> np.ndarray:
    g = np.asarray(image, dtype=np.float32)
    if g.ndim == 3:
        g = g.mean(axis=2)
    h, w = g.shape
    if h < 8 or w < 8:
        g = np.repeat(np.repeat(g, -(-8 // h), axis=0), -(-8 // w), axis=1)
        h, w = g.shape
    sd = float(g.std())
    g = (g - float(g.mean())) / (sd if sd > 0 else 1.0)
    re = np.linspace(0, h, 9).round().astype(int)
    ce = np.linspace(0, w, 9).round().astype(int)
    s = np.add.reduceat(np.add.reduceat(g, re[:-1], axis=0), ce[:-1], axis=1)
    s /= np.outer(np.diff(re), np.diff(ce))
    s -= s.mean()
    ts = float(s.std())
    if ts > 1e-6:
        s /= ts
    return s.ravel().astype(np.float32)


def _plain_content_term(thumb: np.ndarray) -> float:
    t = thumb.reshape(8, 8).astype(float)
    var = float(t.var())
    if var <= 1e-12:
        return -0.02
    ge = (np.mean(np.diff(t, axis=0) ** 2) + np.mean(np.diff(t, axis=1) ** 2)) / (2.0 * var)
    return 0.02 * math.tanh(2.0 * (ge - 0.5))


def test_thumbnail_and_content_term_equal_the_plain_formulation_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    images = [r.image for d in load_all(["samples"], max_images=None, seed=0) for r in d.records]
    cases = list(images)
    for image in images[::3]:
        for name in ("zoom_blur", "gaussian_noise", "contrast", "brightness"):
            cases.append(C.apply(image, name, int(rng.integers(1, 6))))
    cases += [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((5, 7), (8, 8), (3, 300, 3), (224, 224, 3))]
    cases += [np.zeros((40, 40), np.uint8), np.full((40, 40, 3), 7, np.uint8), rng.random((30, 30, 3)).astype(np.float32)]
    for image in cases:
        thumb = S.thumbnail(image)
        assert thumb.dtype == np.float32 and thumb.tobytes() == _plain_thumbnail(image).tobytes(), image.shape
        assert S.content_term(thumb) == _plain_content_term(thumb)


def _plain_level_probs(scores: np.ndarray) -> np.ndarray:
    levels = np.arange(1.0, 6.0)
    s = np.clip(np.asarray(scores, dtype=float), 1.0, 5.0)
    logb = -((levels[None, :] - s[:, None]) ** 2) / (2 * 0.6**2)
    lo, hi = np.full(s.shape, -80.0), np.full(s.shape, 80.0)

    def dist(theta: np.ndarray) -> np.ndarray:
        z = logb + theta[:, None] * levels[None, :]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    for _ in range(64):
        mid = (lo + hi) / 2
        up = dist(mid) @ levels < s
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    p = dist((lo + hi) / 2)
    p[s <= 1.0 + 1e-12] = np.eye(5)[0]
    p[s >= 5.0 - 1e-12] = np.eye(5)[4]
    return p


def test_level_probs_equal_the_plain_bisection_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 32, 256):
        scores = np.concatenate([rng.uniform(0.5, 5.5, n), [1.0, 5.0, 3.0, 1.0000001, 4.9999999]])
        assert S.level_probs(scores).tobytes() == _plain_level_probs(scores).tobytes()
