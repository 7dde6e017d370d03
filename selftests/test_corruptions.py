"""Self-tests of the ImageNet-C set of miqa_checks.conditions: contract, determinism, severity ordering, fidelity
against imagecorruptions (the ImageNet-C reference implementation)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from miqa_checks import conditions as C
from miqa_checks.conditions.kernels import _gaussian_table

SEVEN = C.ids("imagenet_c")

RANDOM = ("gaussian_noise", "impulse_noise", "motion_blur")
DETERMINISTIC = ("brightness", "contrast", "pixelation", "zoom_blur")


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def real_images() -> dict[str, np.ndarray]:
    """Natural images at 224 x 224: camera (grey), astronaut and retina (RGB)."""
    data = pytest.importorskip("skimage.data")
    return {
        "camera": _resize(data.camera(), 224),
        "astronaut": _resize(data.astronaut(), 224),
        "retina": _resize(data.retina(), 224),
    }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ------------------------------------------------------------------ API contract


def test_constants() -> None:
    assert SEVEN == (
        "brightness", "contrast", "gaussian_noise", "impulse_noise", "motion_blur", "pixelation", "zoom_blur"
    )
    assert C.SEVERITIES == (1, 2, 3, 4, 5)
    assert C.PARAMETER_SETS == ("imagenet_c", "medmnist_c")


def test_parameters_json_and_protocol_values() -> None:
    for params in C.PARAMETER_SETS:
        for name in SEVEN:
            for sev in C.SEVERITIES:
                p = C.parameters(name, sev, params)
                assert json.loads(json.dumps(p)) == p
                assert (p["corruption"], p["severity"], p["params"]) == (name, sev, params)
    assert C.parameters("gaussian_noise", 5)["sigma"] == 0.38
    assert C.parameters("impulse_noise", 4)["amount"] == 0.17
    assert (C.parameters("motion_blur", 5)["radius"], C.parameters("motion_blur", 5)["sigma"]) == (20, 15)
    assert C.parameters("contrast", 5)["factor"] == 0.05
    assert C.parameters("brightness", 3)["delta"] == 0.3
    assert C.parameters("pixelation", 5) == {
        "corruption": "pixelation", "severity": 5, "params": "imagenet_c", "source": "imagenet_c",
        "factor": 0.25, "upsample": "nearest",
    }
    z = C.parameters("zoom_blur", 5)
    assert np.allclose(np.arange(z["zoom_start"], z["zoom_stop"], z["zoom_step"]), np.arange(1, 1.31, 0.03))


def test_medmnist_c_profile() -> None:
    oct_f = [C.parameters("pixelation", s, "medmnist_c", "oct")["factor"] for s in C.SEVERITIES]
    pn_f = [C.parameters("pixelation", s, "medmnist_c", "Pneumonia")["factor"] for s in C.SEVERITIES]
    assert oct_f == [0.30, 0.25, 0.20, 0.15, 0.10]
    assert pn_f == [0.8, 0.7, 0.6, 0.5, 0.4]
    other = C.parameters("pixelation", 2, "medmnist_c", "fundus")
    assert (other["factor"], other["upsample"], other["source"]) == (0.5, "box", "medmnist_c")
    assert C.parameters("pixelation", 1, "medmnist_c", "oct")["source"] == "medmnist_c:oct"
    # everything else falls back to the ImageNet-C values
    for name in set(SEVEN) - {"pixelation"}:
        a, b = C.parameters(name, 3), C.parameters(name, 3, "medmnist_c", "oct")
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    img = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    box = C.apply(img, "pixelation", 3, params="medmnist_c", modality="oct")
    near = C.apply(img, "pixelation", 3)
    assert box.shape == near.shape and not np.array_equal(box, near)


def test_condition_ids() -> None:
    for name in SEVEN:
        for sev in C.SEVERITIES:
            cid = C.condition_id(name, sev)
            assert C.parse_condition(cid) == (name, sev)
    assert C.condition_id("pixelation", 3) == "pixelation-3"
    assert C.parse_condition("clean") is None
    for junk in ("", "pixelation", "pixelation-0", "pixelation-6", "blur-3", "pixelation-3x", "pixelate-2",
                 "-3", "pixelation--3", "Clean", "pixelation-03", "pixelation-\uff13", "pixelation-3 "):
        with pytest.raises(ValueError):
            C.parse_condition(junk)


@pytest.mark.parametrize("bad", [("blur", 1), ("pixelate", 1), ("contrast", 0), ("contrast", 6), ("contrast", 2.0),
                                 ("contrast", True)])
def test_unknown_name_or_severity(bad: tuple) -> None:
    img = np.zeros((16, 16), np.uint8)
    with pytest.raises(ValueError, match="valid: "):
        C.apply(img, *bad)
    with pytest.raises(ValueError, match="valid: "):
        C.parameters(*bad)
    with pytest.raises(ValueError, match="valid: "):
        C.condition_id(*bad)
    with pytest.raises(ValueError, match="imagenet_c"):
        C.parameters("contrast", 1, "imagenet-c")


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((7, 16), np.uint8),
        np.zeros((16, 7, 3), np.uint8),
        np.zeros((16, 16), np.float32),
        np.zeros((16, 16), np.uint16),
        np.zeros((16, 16, 4), np.uint8),
        np.zeros((16, 16, 1), np.uint8),
        np.zeros((16,), np.uint8),
        np.zeros((2, 16, 16, 3), np.uint8),
        [[0] * 16] * 16,
    ],
    ids=["short", "narrow", "float", "uint16", "rgba", "1ch", "1d", "4d", "list"],
)
def test_bad_images(image) -> None:
    with pytest.raises(ValueError):
        C.apply(image, "contrast", 1)
    with pytest.raises(ValueError):
        C.apply_batch([np.zeros((16, 16), np.uint8), image], "zoom_blur", 1)


# ----------------------------------------------------------- shape / determinism


@st.composite
def images(draw) -> np.ndarray:
    h = draw(st.integers(8, 96))
    w = draw(st.integers(8, 96))
    shape = (h, w) if draw(st.booleans()) else (h, w, 3)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "smooth", "constant"]))
    if kind == "uniform":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "constant":
        return np.full(shape, draw(st.integers(0, 255)), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127.5 + 127.5 * np.sin(xx / (w / 3 + 1) + rng.uniform(0, 6)) * np.cos(yy / (h / 4 + 1))
    if len(shape) == 3:
        base = base[..., None] * np.array([1.0, 0.8, 0.5])
    return np.clip(base, 0, 255).astype(np.uint8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=images(), name=st.sampled_from(SEVEN), severity=st.sampled_from(C.SEVERITIES),
       seed=st.integers(0, 2**31), params=st.sampled_from(C.PARAMETER_SETS))
def test_shape_dtype_determinism(image: np.ndarray, name: str, severity: int, seed: int, params: str) -> None:
    before = image.copy()
    out = C.apply(image, name, severity, seed=seed, params=params, modality="oct")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before), "input modified"
    assert out.flags.writeable and out.flags.c_contiguous and not np.shares_memory(out, image)
    again = C.apply(image.copy(), name, severity, seed=seed, params=params, modality="oct")
    assert out.tobytes() == again.tobytes()


@pytest.mark.parametrize("name", SEVEN)
def test_smallest_images_every_severity(name: str) -> None:
    rng = np.random.default_rng(1)
    for shape in [(8, 8), (8, 8, 3), (8, 40), (41, 8, 3)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        for sev in C.SEVERITIES:
            out = C.apply(img, name, sev)
            assert out.shape == shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["motion_blur", "zoom_blur", "pixelation"])
@pytest.mark.parametrize("shape", [(8, 8), (64, 50, 3)])
def test_constant_image_stays_constant(name: str, shape: tuple) -> None:
    """Blur kernels sum to 1 (incl. motion blur on images smaller than its kernel)."""
    for value in (0, 1, 200, 255):
        img = np.full(shape, value, np.uint8)
        for sev in C.SEVERITIES:
            assert np.array_equal(C.apply(img, name, sev), img), (value, sev)


def test_non_contiguous_input() -> None:
    rng = np.random.default_rng(2)
    big = rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)
    view = big[::2, ::3]
    for name in SEVEN:
        assert np.array_equal(C.apply(view, name, 3, seed=4), C.apply(view.copy(), name, 3, seed=4))


@pytest.mark.parametrize("name", SEVEN)
def test_batch_equals_single_any_order(name: str) -> None:
    rng = np.random.default_rng(3)
    imgs = [
        rng.integers(0, 256, (40, 48), dtype=np.uint8),
        rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
        rng.integers(0, 256, (40, 48), dtype=np.uint8),
        rng.integers(0, 256, (33, 20, 3), dtype=np.uint8),
        rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
    ]
    imgs.append(imgs[0].copy())
    for sev in (1, 4):
        single = [C.apply(im, name, sev, seed=9) for im in imgs]
        batch = C.apply_batch(imgs, name, sev, seed=9)
        rev = C.apply_batch(imgs[::-1], name, sev, seed=9)[::-1]
        for s, b, r in zip(single, batch, rev):
            assert s.tobytes() == b.tobytes() == r.tobytes()
            assert b.flags.c_contiguous
    assert C.apply_batch([], name, 1) == []


@pytest.mark.parametrize("name", RANDOM)
def test_seed_and_content_drive_the_draws(name: str) -> None:
    rng = np.random.default_rng(5)
    img = rng.integers(30, 220, (48, 48, 3), dtype=np.uint8)
    a, b = C.apply(img, name, 3, seed=0), C.apply(img, name, 3, seed=1)
    assert not np.array_equal(a, b)
    other = img.copy()
    other[0, 0, 0] ^= 1
    diff_a = a.astype(int) - img
    diff_o = C.apply(other, name, 3, seed=0).astype(int) - other
    assert not np.array_equal(diff_a, diff_o)


def test_same_bytes_in_a_fresh_process() -> None:
    code = (
        "import hashlib, numpy as np\n"
        "from miqa_checks import conditions as C\n"
        "img = np.random.default_rng(7).integers(0, 256, (37, 45, 3), dtype=np.uint8)\n"
        "h = hashlib.sha256()\n"
        "for n in C.ids('imagenet_c'):\n"
        "    h.update(C.apply(img, n, 4, seed=11).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    img = np.random.default_rng(7).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    h = hashlib.sha256()
    for n in reversed(SEVEN):  # different order here, same per-call result
        C.apply(img, n, 2, seed=3)
    for n in SEVEN:
        h.update(C.apply(img, n, 4, seed=11).tobytes())
    assert child.stdout.strip() == h.hexdigest()


# ------------------------------------------------------------- severity ordering


@pytest.mark.parametrize("name", SEVEN)
def test_distortion_grows_with_severity(name: str, real_images: dict[str, np.ndarray]) -> None:
    """Mean absolute error vs clean is non-decreasing in severity (1 % / 0.2 level slack).

    Motion blur draws a new angle per severity and the error depends on the angle
    against the image's edges, so there the error is averaged over eight seeds.
    """
    seeds = range(8) if name == "motion_blur" else (0,)
    for key in ("camera", "astronaut"):
        img = _resize(real_images[key], 128)
        mae = [
            float(np.mean([np.mean(np.abs(C.apply(img, name, s, seed=k).astype(float) - img)) for k in seeds]))
            for s in C.SEVERITIES
        ]
        assert mae[0] > 0, (key, mae)
        for lo, hi in zip(mae, mae[1:]):
            assert hi >= lo * 0.99 - 0.2, (key, mae)


# ------------------------------------------------------- fidelity to imagecorruptions


@pytest.fixture(scope="module")
def ic():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = pytest.importorskip("imagecorruptions")
    return mod


def _reference(ic, image: np.ndarray, name: str, severity: int) -> np.ndarray:
    """imagecorruptions' result (grey stacked to 3 channels on the way in, as it requires)."""
    ref_name = "pixelate" if name == "pixelation" else name
    stacked = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    return ic.corrupt(stacked, corruption_name=ref_name, severity=severity)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_fidelity_deterministic(ic, name: str, real_images: dict[str, np.ndarray]) -> None:
    for key, img in real_images.items():
        for sev in C.SEVERITIES:
            ref = _reference(ic, img, name, sev)
            if img.ndim == 2:
                assert np.array_equal(ref[..., 0], ref[..., 2])
                ref = ref[..., 0]
            psnr = _psnr(C.apply(img, name, sev), ref)
            assert psnr >= 35, (key, sev, psnr)


def test_fidelity_motion_blur_same_angle(ic, monkeypatch, real_images: dict[str, np.ndarray]) -> None:
    """With imagecorruptions' angle pinned to the one our generator draws, the blurs agree.

    (The angles themselves cannot match: imagecorruptions draws from numpy's global state.)
    """
    for key, img in real_images.items():
        for sev in C.SEVERITIES:
            angle = float(C.rng_for(img, "motion_blur", sev, 0).uniform(-45, 45))
            monkeypatch.setattr(ic.corruptions.np.random, "uniform", lambda *a, _x=angle, **k: _x)
            ref = _reference(ic, img, "motion_blur", sev)
            monkeypatch.undo()
            ref = ref if img.ndim == 3 else ref[..., 0]
            psnr = _psnr(C.apply(img, "motion_blur", sev, seed=0), ref)
            assert psnr >= 30, (key, sev, angle, psnr)


def _unclipped_noise_std(clean: np.ndarray, noisy: np.ndarray) -> float:
    """std of (noisy - clean) where the output is not clipped (0 < noisy < 255)."""
    keep = (noisy > 0) & (noisy < 255)
    return float(np.std(noisy[keep].astype(float) - clean[keep]))


def test_fidelity_gaussian_noise_statistics(ic, real_images: dict[str, np.ndarray]) -> None:
    np.random.seed(0)
    for key, img in real_images.items():
        clean3 = img if img.ndim == 3 else np.stack([img] * 3, axis=-1)
        for sev in C.SEVERITIES:
            ours = C.apply(img, "gaussian_noise", sev, seed=0)
            ref = _reference(ic, img, "gaussian_noise", sev)
            s_ours, s_ref = _unclipped_noise_std(img, ours), _unclipped_noise_std(clean3, ref)
            assert abs(s_ours / s_ref - 1) < 0.10, (key, sev, s_ours, s_ref)
            assert abs(np.mean(ours, dtype=float) - np.mean(ref, dtype=float)) < 2.0, (key, sev)


def test_gaussian_table_is_a_normal_quantile_table() -> None:
    for sigma in (0.08, 0.38):
        t = _gaussian_table(sigma).astype(float)
        assert abs(np.std(t) / (255 * sigma) - 1) < 0.005
        assert abs(np.mean(t) + 0.5) < 0.01  # floor() shifts by half a level, like the reference's truncation
    img = np.full((128, 128), 128, np.uint8)
    d = C.apply(img, "gaussian_noise", 1, seed=3).astype(float) - 128
    assert abs(np.std(d) / (255 * 0.08) - 1) < 0.03
    kurt = np.mean((d - d.mean()) ** 4) / np.var(d) ** 2
    assert abs(kurt - 3) < 0.2


def _impulse_fraction(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Fraction of samples, among those with clean value in 1..254, set to 0 or 255."""
    keep = (clean > 0) & (clean < 255)
    hit = (noisy == 0) | (noisy == 255)
    return float(np.mean(hit[keep]))


def test_fidelity_impulse_noise_statistics(ic, real_images: dict[str, np.ndarray]) -> None:
    for key, img in real_images.items():
        clean3 = img if img.ndim == 3 else np.stack([img] * 3, axis=-1)
        for sev in C.SEVERITIES:
            amount = C.parameters("impulse_noise", sev)["amount"]
            ours = C.apply(img, "impulse_noise", sev, seed=0)
            ref = _reference(ic, img, "impulse_noise", sev)
            f_ours, f_ref = _impulse_fraction(img, ours), _impulse_fraction(clean3, ref)
            assert abs(f_ours / f_ref - 1) < 0.10, (key, sev, f_ours, f_ref)
            assert abs(f_ours / amount - 1) < 0.10, (key, sev, f_ours, amount)
            keep = (img > 0) & (img < 255)
            salt = np.mean(ours[keep] == 255) / np.mean((ours[keep] == 0) | (ours[keep] == 255))
            assert abs(salt - 0.5) < 0.06, (key, sev, salt)
            untouched = (ours != 0) & (ours != 255)
            assert np.array_equal(ours[untouched], img[untouched])


@pytest.mark.parametrize("shape", [(1,), (3,), (5,), (64, 64), (37, 53, 3), (224, 224, 3)])
def test_uniform_u16_is_rng_integers_value_for_value(shape: tuple[int, ...]) -> None:
    """The noise kernels' raw-bit draw is numpy's full-range uint16 ``integers`` stream exactly
    (the pinned gaussian / impulse outputs rely on it; a numpy that changed it would fail here)."""
    from miqa_checks.conditions.kernels import uniform_u16

    for seed in (0, 1, 12345):
        expected = np.random.default_rng(seed).integers(0, 65536, size=shape, dtype=np.uint16)
        assert np.array_equal(uniform_u16(np.random.default_rng(seed), shape), expected)


@pytest.mark.parametrize("shape", [(64, 64), (37, 53, 3), (96, 80, 3), (9, 12, 3), (224, 224, 3)])
def test_pair_lookup_equals_per_sample_lookup(shape: tuple[int, ...]) -> None:
    """Two samples per look-up (one table, or one per RGB channel) gives ``lut[c][x[..., c]]`` bit for bit,
    on even and odd sizes, contiguous and strided images."""
    from miqa_checks.conditions.kernels import _lut_pairs

    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    luts = [rng.integers(0, 256, 256, dtype=np.uint8) for _ in range(3)]
    for image in (x, x[:, ::-1]):
        assert np.array_equal(_lut_pairs(image, luts[:1]), luts[0][image])
        if image.ndim == 3:
            expected = np.stack([luts[c][image[..., c]] for c in range(3)], axis=-1)
            assert np.array_equal(_lut_pairs(image, luts), expected)
