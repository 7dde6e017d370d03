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


def pair_table(lut: np.ndarray) -> np.ndarray:
    """A 256-level uint8 table as a 65536-entry little-endian uint16 table over byte pairs:
    entry ``b0 | b1 << 8`` is ``lut[b0] | lut[b1] << 8`` (128 KB; built by broadcasting)."""
    l16 = lut.astype("<u2")
    return (l16[None, :] | (l16[:, None] << 8)).ravel()


def apply_lut(x: np.ndarray, lut: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
    """``lut[x]`` for uint8 ``x`` (any shape), bit for bit: two pixels per look-up through
    :func:`pair_table` (``pairs``, when given, is ``pair_table(lut)``), half of numpy's per-index cost."""
    if x.size % 2 or not x.flags.c_contiguous:
        return lut.take(x)
    if pairs is None:
        pairs = pair_table(lut)
    return pairs.take(x.reshape(-1).view("<u2")).view(np.uint8).reshape(x.shape)


@lru_cache(maxsize=64)
def _blend_lut(base: int, factor: float) -> np.ndarray:
    """PIL ``Image.blend(constant base, x, factor)`` for every level x: exactly PIL's rounding."""
    return np.asarray(Image.blend(Image.new("L", (256, 1), base), _levels(), factor)).ravel().copy()


@lru_cache(maxsize=32)
def _brightness_pairs(factor: float) -> np.ndarray:
    return pair_table(_blend_lut(0, factor))


def brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Brightness(factor)``: blend with black (exact)."""
    return apply_lut(x, _blend_lut(0, factor), _brightness_pairs(factor))


_LUMA = np.array([19595, 38470, 7471], dtype=np.float32)


def pil_luma_mean(x: np.ndarray) -> int:
    """``int(mean of PIL's convert("L") + 0.5)``: ITU-R 601 luma in PIL's fixed point (exact).

    Per pixel ``(19595 R + 38470 G + 7471 B + 32768) >> 16``, in float32: every product and partial
    sum is an integer below 2**24, so the BLAS product, the scaling by 2**-16 and the floor are exact.
    """
    if x.ndim == 2:
        total = float(x.sum(dtype=np.int64))
    else:
        luma = x.reshape(-1, 3).astype(np.float32) @ _LUMA
        luma += 32768.0
        luma *= 1.0 / 65536.0
        total = float(np.floor(luma, out=luma).sum(dtype=np.float64))
    return int(total / (x.shape[0] * x.shape[1]) + 0.5)


def contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``ImageEnhance.Contrast(factor)``: blend with the image's mean luma (exact)."""
    return apply_lut(x, _blend_lut(pil_luma_mean(x), factor))


@lru_cache(maxsize=32)
def _gamma_lut(gamma: float) -> np.ndarray:
    """torchvision's PIL ``adjust_gamma(gain=1)`` table: ``int(255.999 * (v / 255) ** gamma)``."""
    return np.array([int((255 + 1 - 1e-3) * pow(v / 255.0, gamma)) for v in range(256)], dtype=np.uint8)


@lru_cache(maxsize=32)
def _gamma_pairs(gamma: float) -> np.ndarray:
    return pair_table(_gamma_lut(gamma))


def gamma(x: np.ndarray, value: float) -> np.ndarray:
    """torchvision ``adjust_gamma(img, value, gain=1)`` on a PIL image (exact)."""
    return apply_lut(x, _gamma_lut(value), _gamma_pairs(value))


def saturate(x: np.ndarray, amount: float) -> np.ndarray:
    """scikit-image HSV round trip with ``S := clip(S + amount, 0, 1)``, H and V kept (RGB only).

    In closed form: channel ``c -> V - min(delta + amount * V, V) * (V - c) / delta`` with
    ``V = max``, ``delta = max - min``; a grey pixel (``delta = 0``, hue 0 by skimage's
    convention) turns red-ish: R stays ``V``, G and B become ``V * (1 - amount)``. Single precision
    on channel planes, truncated; equal to the reference up to round-off (a level at a few pixels).
    """
    planes = np.ascontiguousarray(np.moveaxis(x, 2, 0))  # (3, H, W)
    v8 = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    v = v8.astype(np.float32)
    delta = v - np.minimum(np.minimum(planes[0], planes[1]), planes[2])
    grey = delta == 0
    gain = np.minimum(delta + np.float32(amount) * v, v)
    gain /= np.where(grey, np.float32(1), delta)
    weight = v - planes  # (3, H, W) float32: V - c
    weight[1] = np.where(grey, np.float32(1), weight[1])  # grey: weights (0, 1, 1)
    weight[2] = np.where(grey, np.float32(1), weight[2])
    weight *= -gain
    weight += v
    np.clip(weight, 0, 255, out=weight)
    return np.ascontiguousarray(np.moveaxis(weight.astype(np.uint8), 0, 2))


# --------------------------------------------------------------------- noise


@lru_cache(maxsize=16)
def _speckle_table(sigma: float) -> np.ndarray:
    """uint8 table (256 levels x 4096 normal quantiles): ``trunc(clip(x/255 * (1 + sigma z), 0, 1) * 255)``."""
    from scipy.special import ndtri

    z = ndtri((np.arange(_U12) + 0.5) / _U12)
    v = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return (np.clip(v + v * sigma * z[None, :], 0, 1) * 255).astype(np.uint8).ravel()


def _quantile_index(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x << 12 | u`` (uint32, the shape of ``x``) with ``u`` uniform on 0..4095: the low 12 bits of
    16-bit slices of the generator's raw 64-bit output (a quarter of ``rng.integers``' cost)."""
    raw = rng.bit_generator.random_raw((x.size + 3) // 4).astype("<u8", copy=False)
    u = raw.view("<u2")[: x.size].reshape(x.shape)
    idx = x.astype(np.uint32) << 12
    idx |= u & (_U12 - 1)
    return idx


def speckle_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``x + x * N(0, sigma)`` (x in [0, 1]), clipped; one draw per sample, by inverse CDF at
    1/4096 resolution (|z| > 3.5 folds onto the outermost quantiles)."""
    return _speckle_table(sigma).take(_quantile_index(x, rng))


@lru_cache(maxsize=16)
def _shot_table(rate: float) -> np.ndarray:
    """uint8 table (256 levels x 4096 quantiles): ``trunc(clip(Poisson(x/255 * rate) / rate, 0, 1) * 255)``.

    The Poisson CDFs of all 256 levels come from one ``scipy.special.pdtr`` call (what
    ``scipy.stats.poisson.cdf`` computes, bit for bit, without importing ``scipy.stats``: ~0.6 s)."""
    from scipy.special import pdtr

    q = (np.arange(_U12) + 0.5) / _U12
    kmax = int(rate + 12 * math.sqrt(rate) + 30)
    ks = np.arange(kmax + 1, dtype=np.float64)
    levels = (np.clip(ks / rate, 0, 1) * 255).astype(np.uint8)
    cdf = np.clip(pdtr(ks[None, :], np.arange(256)[:, None] * (rate / 255.0)), 0, 1)  # (256, kmax + 1)
    table = np.empty((256, _U12), dtype=np.uint8)
    for v in range(256):
        table[v] = levels[np.minimum(np.searchsorted(cdf[v], q), kmax)]  # smallest k with CDF(k) >= q
    return table.ravel()


def shot_noise(x: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``Poisson(x * rate) / rate`` (x in [0, 1]), clipped; by inverse CDF at 1/4096 resolution."""
    return _shot_table(float(rate)).take(_quantile_index(x, rng))


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


def grey_plane(x: np.ndarray) -> np.ndarray | None:
    """The ``H x W`` plane of an ``H x W x 3`` image whose three channels are equal (a grey image
    stored as RGB), else None; a colour image is usually told by its first row."""
    if x.ndim != 3 or x.shape[2] != 3:
        return None
    top = x[0]
    if not (np.array_equal(top[:, 0], top[:, 1]) and np.array_equal(top[:, 0], top[:, 2])):
        return None
    plane = x[..., 0]
    return np.ascontiguousarray(plane) if np.array_equal(plane, x[..., 1]) and np.array_equal(plane, x[..., 2]) else None


def defocus_blur(x: np.ndarray, radius: float, alias_blur: float) -> np.ndarray:
    """``cv2.filter2D`` of every channel with :func:`defocus_kernel` (reflect-101 borders), as one
    single-precision FFT product, clipped and truncated (the reference works in float64: a level
    apart at a few pixels). A grey image stored as RGB is blurred once and stacked (each plane is
    transformed on its own, so that is the same result for a third of the work)."""
    from scipy import fft

    plane = grey_plane(x)
    if plane is not None:
        return np.repeat(defocus_blur(plane, radius, alias_blur)[..., None], 3, axis=2)
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
    """uint8 255 inside the centred disk of radius ``int(min half-side * multiplier)``, 0 outside;
    shape (H, W), or (H, W, channels) for RGB (a mask of the image's own shape: one bitwise AND)."""
    cy, cx = h // 2, w // 2
    r = int(min(cx, cy, w - cx, h - cy) * multiplier)
    yy, xx = np.ogrid[:h, :w]
    keep = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, np.uint8(255), np.uint8(0))
    return keep if channels == 0 else np.repeat(keep[..., None], channels, axis=2)


def black_corner(x: np.ndarray, multiplier: float) -> np.ndarray:
    """Black outside a centred disk (dermoscope vignette); the disk rasterised by distance, where the
    reference uses ``cv2.circle`` (they differ on boundary pixels only)."""
    return x & _corner_keep(x.shape[0], x.shape[1], float(multiplier), 0 if x.ndim == 2 else x.shape[2])


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


def _randint(u: float, lo: int, hi: int) -> int:
    """A uniform integer in ``lo..hi`` (inclusive; ``lo`` when ``hi < lo``) from a uniform ``u`` in [0, 1)."""
    return lo + int(u * (hi - lo + 1)) if hi > lo else lo


def bubble(x: np.ndarray, max_radius: int, max_bubbles: int, rng: np.random.Generator) -> np.ndarray:
    """7..max_bubbles translucent white bubbles (radius 3..max_radius; alpha 100, a 2 px rim of 130),
    drawn as MedMNIST-C draws them (PIL ellipses on an alpha layer, later bubbles over earlier ones),
    then white pasted through that layer by PIL (exact for a given set of bubbles).
    All draws come from one ``rng.random`` call (count, then radius and centre per bubble)."""
    h, w = x.shape[:2]
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    border = 2
    most = max(7, int(max_bubbles))
    u = rng.random(1 + 3 * most).tolist()
    top = max(3, min(int(max_radius), w // 2, h // 2))
    for i in range(_randint(u[0], 7, most)):
        r = _randint(u[1 + 3 * i], 3, top)
        cx = _randint(u[2 + 3 * i], min(r, w - 1), w - r)
        cy = _randint(u[3 + 3 * i], min(r, h - 1), h - r)
        draw.ellipse((cx - r - border, cy - r - border, cx + r + border, cy + r + border), fill=130)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=100)
    image = Image.fromarray(x)
    image.paste(_white(image.mode, image.size), (0, 0), layer)  # PIL's paste: the reference's own C blend
    return np.array(image)


@lru_cache(maxsize=8)
def _white(mode: str, size: tuple[int, int]) -> Image.Image:
    """A white image (read only by ``paste``)."""
    return Image.new(mode, size, (255,) * Image.getmodebands(mode))


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
    exactly, the glyph pixels in distribution. All draws come from one ``rng.random`` call.
    """
    h, w = x.shape[:2]
    out = x.copy()
    words, letters_max = int(max_words), int(max_letters)
    u = rng.random(1 + words * (7 + letters_max)).tolist()
    lo_x, lo_y = min(10, w - 1), min(10, h - 1)
    for i in range(_randint(u[0], 1, words)):
        d = u[1 + i * (7 + letters_max) : 1 + (i + 1) * (7 + letters_max)]
        letters = _randint(d[0], 3, letters_max)
        scale = _randint(d[1], 14, int(max_font_scale * 100))
        pen = _randint(d[2], lo_x, max(w - 8 * letters, lo_x))
        base = _randint(d[3], lo_y, max(h - 10, lo_y))
        rgb = [float(int(c * 256)) for c in d[4:7]]
        colour = rgb if x.ndim == 3 else 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        cells, baseline = _glyph_cells(max(4, round(30 * scale / 100.0)))
        alpha = np.concatenate([cells[chr(97 + int(c * 26))] for c in d[7 : 7 + letters]], axis=1)
        _stamp(out, alpha, base - baseline, pen, np.asarray(colour, dtype=np.float32))
    return out


def is_colour(x: np.ndarray) -> bool:
    """True for an RGB image whose channels are not all equal (a grey image stored as RGB is grey)."""
    return x.ndim == 3 and not (np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2]))
