"""Numeric kernels of the medical set (:mod:`miqa_checks.conditions.medical`); numpy/scipy/PIL only.

Every kernel takes uint8 pixels, ``H x W`` (grey) or ``H x W x 3`` (RGB), and returns the same
shape, uint8. Reference: the ``medmnistc`` package (MedMNIST-C, Di Salvo et al. 2024), which works
on PIL images with PIL, OpenCV, scikit-image and torchvision; what is reproduced exactly and what
only in distribution is said per kernel (fidelity: ``selftests/test_corruptions_medical.py``).

Speed: value-only operations (brightness, contrast, gamma, speckle, shot noise) are table look-ups
cached per parameter; blurs are separable passes or one FFT product; drawn artefacts are masks.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_U12 = 1 << 12
#: Added before truncating a single-precision FFT product (round-off up to ~0.01 grey level), so
#: that an exact-integer result is not pushed one level down (as ``kernels._TRUNC_GUARD``).
_FFT_GUARD = 2e-2


def _levels() -> Image.Image:
    """A 256 x 1 grey ramp (0..255): applying a PIL point operation to it gives its look-up table."""
    return Image.frombytes("L", (256, 1), bytes(range(256)))


# ---------------------------------------------------------------- intensity


@lru_cache(maxsize=64)
def _blend_lut(base: int, factor: float) -> np.ndarray:
    """PIL ``Image.blend(constant base, x, factor)`` for every level x: exactly PIL's rounding."""
    return np.asarray(Image.blend(Image.new("L", (256, 1), base), _levels(), factor)).ravel().copy()


def brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Brightness(factor)``: blend with black (exact)."""
    return _blend_lut(0, factor).take(x)


def pil_luma_mean(x: np.ndarray) -> int:
    """``int(mean of PIL's convert("L") + 0.5)``: ITU-R 601 luma in PIL's fixed point (exact)."""
    if x.ndim == 2:
        total = int(x.sum(dtype=np.int64))
    else:
        luma = (x[..., 0].astype(np.uint32) * 19595 + x[..., 1].astype(np.uint32) * 38470
                + x[..., 2].astype(np.uint32) * 7471 + 0x8000) >> 16
        total = int(luma.sum(dtype=np.int64))
    return int(total / (x.shape[0] * x.shape[1]) + 0.5)


def contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Contrast(factor)``: blend with the image's mean luma (exact)."""
    return _blend_lut(pil_luma_mean(x), factor).take(x)


@lru_cache(maxsize=32)
def _gamma_lut(gamma: float) -> np.ndarray:
    """torchvision's PIL ``adjust_gamma(gain=1)`` table: ``int(255.999 * (v / 255) ** gamma)``."""
    return np.array([int((255 + 1 - 1e-3) * pow(v / 255.0, gamma)) for v in range(256)], dtype=np.uint8)


def gamma(x: np.ndarray, value: float) -> np.ndarray:
    """torchvision ``adjust_gamma(img, value, gain=1)`` on a PIL image (exact)."""
    return _gamma_lut(value).take(x)


def saturate(x: np.ndarray, amount: float) -> np.ndarray:
    """scikit-image HSV round trip with ``S := clip(S + amount, 0, 1)``, H and V kept (RGB only).

    In closed form: channel ``c -> V - min(delta + amount * V, V) * (V - c) / delta`` with
    ``V = max``, ``delta = max - min``; a grey pixel (``delta = 0``, hue 0 by skimage's
    convention) turns red-ish: R stays ``V``, G and B become ``V * (1 - amount)``. Float64,
    truncated; equal to the reference up to float round-off (a level at a few pixels).
    """
    f = x.astype(np.float64)
    v = f.max(axis=2, keepdims=True)
    delta = v - f.min(axis=2, keepdims=True)
    grey = delta == 0
    w = np.where(grey, np.array([0.0, 1.0, 1.0]), (v - f) / np.where(grey, 1.0, delta))
    sv = np.minimum(delta + amount * v, v)
    return np.clip(v - sv * w, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------- noise


@lru_cache(maxsize=16)
def _speckle_table(sigma: float) -> np.ndarray:
    """uint8 table (256 levels x 4096 normal quantiles): ``trunc(clip(x/255 * (1 + sigma z), 0, 1) * 255)``."""
    from scipy.special import ndtri

    z = ndtri((np.arange(_U12) + 0.5) / _U12)
    v = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return (np.clip(v + v * sigma * z[None, :], 0, 1) * 255).astype(np.uint8).ravel()


def speckle_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``x + x * N(0, sigma)`` (x in [0, 1]), clipped; one draw per sample, by inverse CDF at
    1/4096 resolution (|z| > 3.5 folds onto the outermost quantiles)."""
    u = rng.integers(0, _U12, size=x.shape, dtype=np.uint16)
    idx = (x.astype(np.uint32) << 12) | u
    return _speckle_table(sigma).take(idx)


@lru_cache(maxsize=16)
def _shot_table(rate: float) -> np.ndarray:
    """uint8 table (256 levels x 4096 quantiles): ``trunc(clip(Poisson(x/255 * rate) / rate, 0, 1) * 255)``."""
    from scipy.stats import poisson

    q = (np.arange(_U12) + 0.5) / _U12
    kmax = int(rate + 12 * math.sqrt(rate) + 30)
    ks = np.arange(kmax + 1)
    levels = (np.clip(ks / rate, 0, 1) * 255).astype(np.uint8)
    table = np.empty((256, _U12), dtype=np.uint8)
    for v in range(256):
        cdf = poisson.cdf(ks, v * (rate / 255.0))
        table[v] = levels[np.minimum(np.searchsorted(cdf, q), kmax)]  # smallest k with CDF(k) >= q
    return table.ravel()


def shot_noise(x: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``Poisson(x * rate) / rate`` (x in [0, 1]), clipped; by inverse CDF at 1/4096 resolution."""
    u = rng.integers(0, _U12, size=x.shape, dtype=np.uint16)
    idx = (x.astype(np.uint32) << 12) | u
    return _shot_table(float(rate)).take(idx)


# ---------------------------------------------------------------------- blur


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """PIL JPEG encode at ``quality`` and decode (exact: the same libjpeg calls as the reference)."""
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return np.array(Image.open(buf))


@lru_cache(maxsize=32)
def _gaussian_taps(size: int) -> np.ndarray:
    """torchvision's ``gaussian_blur`` kernel: ``size`` taps, sigma ``0.3 * ((size - 1) / 2 - 1) + 0.8``."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    half = (size - 1) * 0.5
    t = np.linspace(-half, half, size)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(x: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``gaussian_blur(kernel_size=size)``: separable, reflect borders, rounded."""
    from scipy.ndimage import correlate1d

    k = _gaussian_taps(int(size))
    f = x.astype(np.float32)
    f = correlate1d(f, k, axis=0, mode="mirror")
    f = correlate1d(f, k, axis=1, mode="mirror")
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """MedMNIST-C's ``disk``: a float32 disk on ``[-8, 8]^2`` (``[-r, r]^2`` above 8), normalised,
    then smoothed by a Gaussian of ``alias_blur`` (3 x 3; 5 x 5 above radius 8; reflect-101 borders)."""
    from scipy.ndimage import correlate1d

    span = 8 if radius <= 8 else int(radius)
    taps = 3 if radius <= 8 else 5
    grid = np.arange(-span, span + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    t = np.arange(taps) - taps // 2
    g = np.exp(-(t**2) / (2.0 * alias_blur**2))
    g = (g / g.sum()).astype(np.float32)
    disk = correlate1d(correlate1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")
    return disk


@lru_cache(maxsize=16)
def _kernel_spectrum(radius: float, alias_blur: float, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of the defocus kernel, flipped and placed for a 'valid' correlation on ``shape``."""
    from scipy import fft

    k = defocus_kernel(radius, alias_blur)[::-1, ::-1]
    return fft.rfft2(k, s=shape).astype(np.complex64)


def defocus_blur(x: np.ndarray, radius: float, alias_blur: float) -> np.ndarray:
    """``cv2.filter2D`` of every channel with :func:`defocus_kernel` (reflect-101 borders), as one
    single-precision FFT product, clipped and truncated (the reference works in float64: a level
    apart at a few pixels)."""
    from scipy import fft

    p = defocus_kernel(radius, alias_blur).shape[0] // 2
    h, w = x.shape[:2]
    planes = x[None] if x.ndim == 2 else np.moveaxis(x, 2, 0)  # (C, H, W)
    padded = np.pad(planes, ((0, 0), (p, p), (p, p)), mode="reflect").astype(np.float32)
    shape = padded.shape[1:]
    full = fft.irfft2(fft.rfft2(padded) * _kernel_spectrum(radius, alias_blur, shape), s=shape)
    out = full[:, 2 * p : 2 * p + h, 2 * p : 2 * p + w]
    out = np.clip(out + _FFT_GUARD, 0, 255).astype(np.uint8)
    return out[0] if x.ndim == 2 else np.ascontiguousarray(np.moveaxis(out, 0, 2))


# ------------------------------------------------------------ drawn artefacts


@lru_cache(maxsize=16)
def _corner_keep(h: int, w: int, multiplier: float, channels: int) -> np.ndarray:
    """uint8 1 inside the centred disk of radius ``int(min half-side * multiplier)``, 0 outside;
    shape (H, W) or (H, W, 1) for RGB (broadcast)."""
    cy, cx = h // 2, w // 2
    r = int(min(cx, cy, w - cx, h - cy) * multiplier)
    yy, xx = np.ogrid[:h, :w]
    keep = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
    return keep if channels == 0 else keep[..., None]


def black_corner(x: np.ndarray, multiplier: float) -> np.ndarray:
    """Black outside a centred disk (dermoscope vignette); the disk rasterised by distance, where the
    reference uses ``cv2.circle`` (they differ on boundary pixels only)."""
    return x * _corner_keep(x.shape[0], x.shape[1], float(multiplier), 0 if x.ndim == 2 else 3)


INKS_PER_SIZE = 10


@lru_cache(maxsize=8)
def _ink_bank(size: int) -> tuple[np.ndarray, ...]:
    """Ten fixed binary blots in a ``size x size`` box (like MedMNIST-C's stored ten per size): a disk
    of radius 0.45 size with a wavy rim (three harmonics of up to 12 % each); about 60 % of the box."""
    rng = np.random.default_rng([20240917, size])  # fixed: the bank is part of the definition
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size] - c
    theta = np.arctan2(yy, xx)
    bank = []
    for _ in range(INKS_PER_SIZE):
        rim = np.ones_like(theta)
        for k, a, ph in zip((2, 3, 5), rng.uniform(0, 0.12, 3), rng.uniform(0, 2 * np.pi, 3)):
            rim += a * np.cos(k * theta + ph)
        bank.append(np.hypot(yy, xx) <= 0.45 * size * rim)
    return tuple(bank)


def stain_deposit(x: np.ndarray, max_marks: int, ink_size: int, rng: np.random.Generator) -> np.ndarray:
    """1..max_marks black ink blots of ``ink_size`` px at random places at least 10 px from the edges.

    The reference draws its blots from a stored set of ink masks (``medmnistc/assets/inks.npz``);
    here from a generated set (:func:`_ink_bank`), so only the mark counts, sizes and placement
    follow the reference exactly, and the blot shapes in distribution (darkened area).
    """
    out = x.copy()
    h, w = x.shape[:2]
    n = int(rng.integers(1, max_marks + 1)) if max_marks > 1 else int(max_marks)
    size = min(int(ink_size), h, w)
    bank = _ink_bank(size)
    for _ in range(n):
        blob = bank[int(rng.integers(0, INKS_PER_SIZE))]
        top = int(rng.integers(min(10, h - size), max(h - size - 10, min(10, h - size)) + 1))
        left = int(rng.integers(min(10, w - size), max(w - size - 10, min(10, w - size)) + 1))
        out[top : top + size, left : left + size][blob] = 0
    return out


def bubble(x: np.ndarray, max_radius: int, max_bubbles: int, rng: np.random.Generator) -> np.ndarray:
    """7..max_bubbles translucent white bubbles (radius 3..max_radius; alpha 100, a 2 px rim of 130),
    drawn as MedMNIST-C draws them (PIL ellipses on an alpha layer, later bubbles over earlier ones),
    then white blended through that layer with PIL's paste arithmetic (exact for a given set of bubbles)."""
    h, w = x.shape[:2]
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    border = 2
    n = int(rng.integers(7, max(7, max_bubbles) + 1))
    radii = rng.integers(3, max(3, min(max_radius, w // 2, h // 2)) + 1, size=n)
    cxs = rng.integers(np.minimum(radii, w - 1), np.maximum(w - radii, np.minimum(radii, w - 1)) + 1)
    cys = rng.integers(np.minimum(radii, h - 1), np.maximum(h - radii, np.minimum(radii, h - 1)) + 1)
    for r, cx, cy in zip(radii.tolist(), cxs.tolist(), cys.tolist()):
        draw.ellipse((cx - r - border, cy - r - border, cx + r + border, cy + r + border), fill=130)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=100)
    a = np.asarray(layer).ravel()
    idx = np.flatnonzero(a)
    alpha = a.take(idx).astype(np.uint32)
    out = x.copy()
    flat = out.reshape(h * w, -1)
    v = flat.take(idx, axis=0).astype(np.uint32) * (255 - alpha[:, None]) + 255 * alpha[:, None] + 128
    flat[idx] = ((v >> 8) + v) >> 8  # PIL's paste arithmetic: BLEND with DIV255
    return out


@lru_cache(maxsize=64)
def _glyph_cells(size: int) -> tuple[dict[str, np.ndarray], int]:
    """Per letter a ``(height, advance)`` float32 alpha cell of PIL's default font at ``size`` px,
    all on one baseline, and that baseline's row; a word is its letters' cells side by side."""
    font = ImageFont.load_default(size=size)
    boxes = {c: font.getbbox(c, anchor="ls") for c in map(chr, range(97, 123))}
    top = min(b[1] for b in boxes.values())
    bottom = max(b[3] for b in boxes.values())
    cells = {}
    for c, (left, _, right, _) in boxes.items():
        width = max(int(round(font.getlength(c))), right, 1)
        canvas = Image.new("L", (width, bottom - top), 0)
        ImageDraw.Draw(canvas).text((0, -top), c, fill=255, font=font, anchor="ls")
        cells[c] = np.asarray(canvas, dtype=np.float32) / 255.0
    return cells, -top


def _stamp(out: np.ndarray, alpha: np.ndarray, top: int, left: int, colour: np.ndarray) -> None:
    """Blend ``colour`` into ``out`` through ``alpha`` at (top, left), clipped to the image; in place."""
    h, w = out.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + alpha.shape[0], h), min(left + alpha.shape[1], w)
    if y0 >= y1 or x0 >= x1:
        return
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
    region = out[y0:y1, x0:x1]
    if out.ndim == 3:
        a = a[..., None]
    region[...] = np.rint(region * (1.0 - a) + colour * a).astype(np.uint8)


def characters(x: np.ndarray, max_words: int, max_letters: int, max_font_scale: float,
               rng: np.random.Generator) -> np.ndarray:
    """1..max_words random lower-case words (3..max_letters letters) in random colours, as
    MedMNIST-C places them (bottom-left corner at x in [10, W - 8 * letters], y in [10, H - 10]).

    The reference draws with OpenCV's Hershey font at scale 0.14..max_font_scale; here PIL's
    default font at ``round(30 * scale)`` px (about the same letter height), a word stamped from
    cached letter cells (no kerning): word counts, lengths, places and colours follow the reference
    exactly, the glyph pixels in distribution.
    """
    h, w = x.shape[:2]
    out = x.copy()
    n = int(rng.integers(1, max_words + 1))
    letters = rng.integers(3, max_letters + 1, size=n)
    scales = rng.integers(14, int(max_font_scale * 100) + 1, size=n)
    codes = rng.integers(0, 26, size=int(letters.sum()))
    lo_x, lo_y = min(10, w - 1), min(10, h - 1)
    pens = rng.integers(lo_x, np.maximum(w - 8 * letters, lo_x) + 1)
    bases = rng.integers(lo_y, max(h - 10, lo_y) + 1, size=n)
    rgb = rng.integers(0, 256, size=(n, 3)).astype(np.float32)
    colours = rgb if x.ndim == 3 else rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    start = 0
    for i in range(n):
        cells, baseline = _glyph_cells(max(4, round(30 * int(scales[i]) / 100.0)))
        word = codes[start : start + letters[i]]
        start += int(letters[i])
        alpha = np.hstack([cells[chr(97 + int(c))] for c in word])
        _stamp(out, alpha, int(bases[i]) - baseline, int(pens[i]), colours[i])
    return out


def is_colour(x: np.ndarray) -> bool:
    """True for an RGB image whose channels are not all equal (a grey image stored as RGB is grey)."""
    return x.ndim == 3 and not (np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2]))
