"""Numeric kernels of the ImageNet-C set (:mod:`miqa_checks.conditions.imagenet_c`; numpy/scipy/PIL only).

Every kernel takes uint8 pixels, ``H x W`` (grey) or ``H x W x K`` (``K`` stacked
channels; for RGB ``K == 3``), and returns the same shape, uint8. Values are worked
in grey levels (0..255), not in ``x / 255``; the final float -> uint8 step truncates,
as imagecorruptions' ``np.uint8(...)`` does.

Speed notes (see ``benchmarks/bench_corruptions.py``):

* brightness / contrast are table look-ups (the output depends on the pixel value
  only, plus the pixel's HSV value ``V`` for RGB brightness);
* gaussian / impulse noise draw one uint16 per sample (cheap raw bits) and map it
  through a cached table;
* motion blur is a sum of edge-padded shifts done as BLAS ``saxpy`` calls on the
  flattened padded image (per kernel tap, in single-threaded chunks);
* zoom blur is two sparse matrix products (the 1-D linear-interpolation operators of
  all zoom factors, stacked), cached per image size and severity.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from PIL import Image
from scipy.linalg.blas import saxpy
from scipy.special import ndtri

#: Added before the float -> uint8 truncation of the blur kernels, so that a result
#: that is an exact integer in exact arithmetic (a flat region) is not pushed one
#: level down by float32 round-off. Far below one grey level.
_TRUNC_GUARD = 1e-3

_U16 = 1 << 16

#: Elements per BLAS saxpy call. OpenBLAS runs ?axpy on one thread up to n = 10000 and
#: threads it above; threaded calls stall by orders of magnitude when the cores are busy
#: (a test run beside an audit), and a chunk this size also keeps the accumulator in L1/L2.
_SAXPY_CHUNK = 8192


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Clip float grey levels to [0, 255] and truncate to uint8 (imagecorruptions' rule)."""
    return np.clip(values, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------- brightness


@lru_cache(maxsize=16)
def _brightness_grey_lut(delta: float) -> np.ndarray:
    """256-entry table: ``trunc(clip(v / 255 + delta, 0, 1) * 255)``, float64 as the reference."""
    v = np.arange(256) / 255.0
    return (np.clip(v + delta, 0, 1) * 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _brightness_rgb_lut(delta: float) -> np.ndarray:
    """65536-entry table indexed by ``V * 256 + x`` (``V`` = max channel, ``x`` = channel).

    Adding ``delta`` to HSV's V with H and S unchanged scales every channel by
    ``V' / V`` (``V' = min(V / 255 + delta, 1)``); a black pixel (``V == 0``, S = 0 by
    skimage's convention) becomes grey ``V'``. The max channel gets ``V'`` exactly.
    """
    grey = _brightness_grey_lut(delta)
    vmax = np.arange(1, 256, dtype=np.float64)[:, None] / 255.0
    x = np.arange(256, dtype=np.float64)[None, :] / 255.0
    lut = np.empty((256, 256), dtype=np.uint8)
    lut[0, :] = grey[0]
    lut[1:] = (np.clip(x * (np.minimum(vmax + delta, 1.0) / vmax), 0, 1) * 255).astype(np.uint8)
    idx = np.arange(256)
    lut[idx, idx] = grey
    return lut.ravel()


def brightness(x: np.ndarray, delta: float) -> np.ndarray:
    """ImageNet-C brightness: ``+delta`` on HSV's V (RGB, ``K == 3``) or on the value (grey)."""
    if x.ndim == 2:
        return _brightness_grey_lut(delta)[x]
    vmax = np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2]).astype(np.uint16)
    idx = (vmax << 8)[..., None] | x
    return _brightness_rgb_lut(delta).take(idx)


# ------------------------------------------------------------------- contrast


def _channel_sums(x: np.ndarray) -> np.ndarray:
    """Exact per-channel pixel sums, int64, shape (K,) (K = 1 for grey)."""
    flat = x.reshape(x.shape[0] * x.shape[1], -1)
    return np.array([int(flat[:, k].sum(dtype=np.int64)) for k in range(flat.shape[1])])


def contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """ImageNet-C contrast: ``(x - mean) * factor + mean`` per channel, x in [0, 1]."""
    n = x.shape[0] * x.shape[1]
    means = _channel_sums(x) / n / 255.0
    v = np.arange(256)[:, None] / 255.0
    luts = (np.clip((v - means) * factor + means, 0, 1) * 255).astype(np.uint8)  # (256, K)
    if x.ndim == 2 or (luts == luts[:, :1]).all():  # grey, or equal channel means: one table
        return _lut_pairs(x, [luts[:, 0]])
    if x.shape[2] == 3:
        return _lut_pairs(x, [luts[:, 0], luts[:, 1], luts[:, 2]])
    k = x.shape[2]
    idx = x.astype(np.uint16) * k + np.arange(k, dtype=np.uint16)
    return luts.ravel().take(idx)


def _lut_pairs(x: np.ndarray, luts: list[np.ndarray]) -> np.ndarray:
    """``luts[c][x[..., c]]`` (one table for every sample, or one per channel of 3), bit for bit, two
    samples per look-up: each little-endian uint16 of the flat image indexes a 65536-entry pair table
    (per channel: three tables, one per phase of the pairs against the channels). Numpy's per-index
    cost dominates a look-up, so halving the indices halves the time."""
    flat = x.reshape(-1)
    if flat.size % 2 or not x.flags.c_contiguous:
        if len(luts) == 1:
            return luts[0].take(x)
        return np.stack([luts[c].take(x[..., c]) for c in range(3)], axis=-1)
    pairs16 = flat.view("<u2")
    if len(luts) == 1:
        return _pair_table(luts[0], luts[0]).take(pairs16).view(np.uint8).reshape(x.shape)
    # the pair j holds channels (2j mod 3, (2j + 1) mod 3): phases (0, 1), (2, 0), (1, 2)
    tables = np.concatenate([_pair_table(luts[(2 * p) % 3], luts[(2 * p + 1) % 3]) for p in range(3)])
    idx = _phase_offsets(pairs16.size) + pairs16
    return tables.take(idx).view(np.uint8).reshape(x.shape)


def _pair_table(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Little-endian uint16 table over ``b0 | b1 << 8``: ``first[b0] | second[b1] << 8``."""
    return (first.astype("<u2")[None, :] | (second.astype("<u2")[:, None] << 8)).ravel()


@lru_cache(maxsize=8)
def _phase_offsets(n: int) -> np.ndarray:
    """int32 ``(j mod 3) * 65536`` for the pairs ``j < n``: which of three pair tables a pair uses."""
    return ((np.arange(n, dtype=np.int32) % 3) << 16).astype(np.int32)


# ---------------------------------------------------------------------- noise


@lru_cache(maxsize=16)
def _gaussian_table(sigma: float) -> np.ndarray:
    """int16 table over a uint16 draw ``u``: ``floor(255 * sigma * z)``, ``z = ndtri((u + .5) / 65536)``.

    Inverse-CDF sampling at 1/65536 resolution: the quantiles are exact; |z| > 4.17
    (probability < 3e-5) folds onto the outermost entries. ``floor`` reproduces the
    reference's ``trunc(clip(x / 255 + n, 0, 1) * 255)`` for integer ``x``.
    """
    z = ndtri((np.arange(_U16) + 0.5) / _U16)
    return np.floor(255.0 * sigma * z).astype(np.int16)


def uniform_u16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``rng.integers(0, 65536, size=shape, dtype=np.uint16)``, the same values in the same order
    (numpy draws full-range uint16 as the generator's raw 64-bit outputs cut in little-endian 16-bit
    slices; ``selftests/test_corruptions.py`` checks it), without the per-value bounded-draw loop."""
    n = math.prod(shape)
    raw = rng.bit_generator.random_raw((n + 3) // 4).astype("<u8", copy=False)
    return raw.view("<u2")[:n].reshape(shape)


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C gaussian noise: ``x / 255 + N(0, sigma)``, clipped to [0, 1]; per sample."""
    u = uniform_u16(rng, x.shape)
    out = x.astype(np.int16)
    out += _gaussian_table(sigma).take(u)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """skimage ``random_noise(mode='s&p', amount=amount)``: each sample flips with probability
    ``amount``, half of the flips to 255 (salt), half to 0 (pepper); per sample (per channel)."""
    u = uniform_u16(rng, x.shape)
    salt = (u < round(amount * _U16 / 2)).view(np.uint8)  # 0/1
    flip = (u < round(amount * _U16)).view(np.uint8)  # 0/1, includes salt
    out = x & (flip - np.uint8(1))  # flipped -> 0, else unchanged (1 - 1 = 0, 0 - 1 = 255)
    out |= salt * np.uint8(255)
    return out


# ----------------------------------------------------------------- motion blur


def motion_taps(radius: int, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """imagecorruptions' motion kernel: weights (W,) float64 and integer shifts dy (W,), dx (W,).

    ``W = 2 * radius + 1``; tap ``i`` has weight ``exp(-i^2 / 2 sigma^2)`` (normalised)
    and samples the image at ``(y - dy_i, x - dx_i)``; float steps as in the reference.
    """
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / np.sum(k)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    dy = np.array([-math.ceil(((i * point[0]) / hypot) - 0.5) for i in range(width)])
    dx = np.array([-math.ceil(((i * point[1]) / hypot) - 0.5) for i in range(width)])
    return k, dy, dx


def motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageNet-C motion blur: ``sum_i k_i * x[clamp(y - dy_i), clamp(x - dx_i)]`` (edge replicated).

    The reference stops at the first tap whose shift reaches the image size (only
    images with a side <= 2 * radius), dropping the remaining weight and darkening the
    image; here edge replication simply continues, so the kernel always sums to 1.
    """
    k, dy, dx = motion_taps(radius, sigma, angle)
    h, w = x.shape[:2]
    top, bottom = max(int(dy.max()), 0), max(-int(dy.min()), 0)
    left, right = max(int(dx.max()), 0), max(-int(dx.min()), 0)
    pad = ((top, bottom), (left, right)) + ((0, 0),) * (x.ndim - 2)
    padded = np.pad(x, pad, mode="edge").astype(np.float32).ravel()
    c = 1 if x.ndim == 2 else x.shape[2]
    wp = w + left + right
    n = ((h - 1) * wp + w) * c  # the last output sample's flat index + 1
    acc = np.zeros(h * wp * c, dtype=np.float32)
    taps = [(float(weight), int(off)) for weight, off in zip(k, ((top - dy) * wp + (left - dx)) * c)]
    for start in range(0, n, _SAXPY_CHUNK):
        m = min(_SAXPY_CHUNK, n - start)
        for weight, off in taps:
            acc = saxpy(padded, acc, n=m, a=weight, offx=off + start, offy=start)
    out = acc.reshape((h, wp) + x.shape[2:])[:, :w]
    return _to_uint8(out + _TRUNC_GUARD)


# ------------------------------------------------------------------- zoom blur


def _zoom_axis(n: int, zoom: float) -> sp.csr_matrix:
    """(n x n) operator: centre-crop ``ceil(n / zoom)`` samples, ``scipy.ndimage.zoom(order=1)``
    them to ``round(crop * zoom)`` samples, keep the first ``n`` (imagecorruptions' clipped_zoom)."""
    crop = int(np.ceil(n / float(zoom)))
    top = (n - crop) // 2
    size = int(round(crop * zoom))
    step = (crop - 1) / (size - 1) if size > 1 else 1.0  # scipy's grid_mode=False mapping
    coord = np.arange(n) * step
    lo = np.minimum(np.floor(coord).astype(np.int64), crop - 1)
    frac = coord - lo
    hi = np.minimum(lo + 1, crop - 1)
    rows = np.repeat(np.arange(n), 2)
    cols = np.stack([lo, hi], axis=1).ravel() + top
    vals = np.stack([1.0 - frac, frac], axis=1).ravel()
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


@lru_cache(maxsize=32)
def _zoom_operators(h: int, w: int, zooms: tuple[float, ...]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Row operator ``[R_1 .. R_Z] / (Z + 1)`` (h x Z*h) and stacked column operators (Z*w x w), float32."""
    rows = sp.hstack([_zoom_axis(h, z) for z in zooms]) / (len(zooms) + 1)
    cols = sp.vstack([_zoom_axis(w, z) for z in zooms])
    return rows.tocsr().astype(np.float32), cols.tocsr().astype(np.float32)


def zoom_blur(x: np.ndarray, zooms: tuple[float, ...]) -> np.ndarray:
    """ImageNet-C zoom blur: ``(x + sum_z clipped_zoom(x, z)) / (Z + 1)``; ``zooms`` includes 1.0.

    ``sum_z R_z X C_z^T`` in two sparse products: the column (W) pass for every zoom at
    once on ``X^T``, one transpose per zoom, then the row (H) pass summing over zooms.
    """
    h, w = x.shape[:2]
    c = 1 if x.ndim == 2 else x.shape[2]
    rows, cols = _zoom_operators(h, w, zooms)
    flat = x.reshape(h, w * c).astype(np.float32)
    xt = np.ascontiguousarray(flat.T).reshape(w, c * h)  # (W, C, H)
    u = (cols @ xt).reshape(len(zooms), w * c, h)  # (Z, W*C, H)
    v = np.ascontiguousarray(u.transpose(0, 2, 1)).reshape(len(zooms) * h, w * c)
    out = rows @ v + flat / (len(zooms) + 1)
    return _to_uint8(out + _TRUNC_GUARD).reshape(x.shape)


# ----------------------------------------------------------------- pixelation


def pixelate(x: np.ndarray, factor: float, upsample: str) -> np.ndarray:
    """PIL BOX downscale to ``int(side * factor)`` (at least 1), then ``upsample`` back.

    ``upsample``: ``"nearest"`` (ImageNet-C) or ``"box"`` (MedMNIST-C). ``K`` must be 1 or 3.
    """
    h, w = x.shape[:2]
    small = (max(int(w * factor), 1), max(int(h * factor), 1))
    up = Image.Resampling.NEAREST if upsample == "nearest" else Image.Resampling.BOX
    img = Image.fromarray(x).resize(small, Image.Resampling.BOX).resize((w, h), up)
    return np.array(img)  # a writable copy (asarray of a PIL image is read-only)
