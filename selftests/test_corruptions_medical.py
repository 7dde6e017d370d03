"""Self-tests of the medical corruption set (MedMNIST-C): contract, tables, per-modality mapping,
applicability, properties, and fidelity against the ``medmnistc`` package.

The fidelity tests skip when ``medmnistc`` cannot be imported: it needs Wand + ImageMagick
(``apt-get install libmagickwand-dev``) and is installed with ``pip install --no-deps medmnistc``
(its own pins would downgrade scikit-image), so it is not part of the ``dev`` extra.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from miqa_checks import conditions as C
from miqa_checks.conditions import medical as M

MEDICAL = C.ids("medical")
RANDOM = ("speckle_noise", "shot_noise", "stain_deposit", "bubble", "characters")


def _resize(image: np.ndarray, side: int = 224) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def rgb_images() -> list[np.ndarray]:
    """Colour and grey-as-RGB natural images at 224 x 224 (MediMeta-C's format)."""
    data = pytest.importorskip("skimage.data")
    grey = _resize(data.camera())
    return [_resize(data.astronaut()), _resize(data.retina()), np.stack([grey] * 3, axis=-1)]


def test_the_set_of_issue_12() -> None:
    assert set(MEDICAL) == {
        "jpeg_compression", "speckle_noise", "shot_noise", "defocus_blur", "gaussian_blur", "brightness_up",
        "brightness_down", "contrast_up", "contrast_down", "gamma_up", "gamma_down", "saturate", "stain_deposit",
        "bubble", "black_corner", "characters",
    }


@pytest.mark.parametrize("name", MEDICAL)
def test_contract_every_table_row_and_shape(name: str) -> None:
    assert set(M.TABLES[name]) <= set(M.REFERENCE_DATASET.values()) | {"pneumoniamnist", "organcmnist", "organsmnist"}
    for rows in M.TABLES[name].values():
        assert len(rows) >= 5
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (50, 40), dtype=np.uint8)
    for severity in C.SEVERITIES:
        p = C.parameters(name, severity)
        assert p["source"].startswith("medmnist_c:") and p["corruption"] == name
        for image in (colour, grey):
            if not C.REGISTRY[name].applies(image):
                continue
            out = C.apply(image, name, severity, seed=4)
            assert out.shape == image.shape and out.dtype == np.uint8
            assert np.array_equal(out, C.apply(image.copy(), name, severity, seed=4))


@pytest.mark.parametrize("name", RANDOM)
def test_random_ones_depend_on_the_seed(name: str) -> None:
    image = np.random.default_rng(2).integers(30, 220, (64, 64, 3), dtype=np.uint8)
    assert not np.array_equal(C.apply(image, name, 5, seed=0), C.apply(image, name, 5, seed=1))


def test_parameter_table_follows_the_modality() -> None:
    assert C.parameters("speckle_noise", 2, modality="OCT")["sigma"] == 0.30
    assert C.parameters("speckle_noise", 2, modality="OCT")["source"] == "medmnist_c:octmnist"
    assert C.parameters("speckle_noise", 2, modality="breast ultrasound")["sigma"] == 0.15
    assert C.parameters("defocus_blur", 5, modality="fundus photography")["radius"] == 8
    assert C.parameters("brightness_up", 5, modality="CT")["factor"] == 1.6  # organamnist
    assert C.parameters("brightness_up", 5)["factor"] == 1.5  # default table: chestmnist
    assert C.parameters("shot_noise", 1, modality="nuclear medicine")["source"] == "medmnist_c:chestmnist"


def test_default_mapping_per_modality() -> None:
    med = ("medical",)
    assert {"speckle_noise"} <= set(C.corruptions_for("ultrasound", med)) & set(C.corruptions_for("OCT", med))
    for modality in ("chest X-ray", "CT"):
        assert {"gamma_up", "gamma_down"} <= set(C.corruptions_for(modality, med))
    for modality in ("ultrasound", "OCT", "MR", "microscopy", "dermoscopy", "fundus photography"):
        assert not {"gamma_up", "gamma_down"} & set(C.corruptions_for(modality, med))
    assert {"stain_deposit", "bubble", "saturate"} <= set(C.corruptions_for("histopathology slide", med))
    assert {"black_corner", "characters"} <= set(C.corruptions_for("dermoscopy", med))
    assert "characters" in C.corruptions_for("ultrasound", med)  # burnt-in annotations
    for grey_modality in ("chest X-ray", "CT", "MR", "ultrasound", "OCT"):
        assert "saturate" not in C.corruptions_for(grey_modality, med)
    both = C.corruptions_for("CT", ("imagenet_c", "medical"))
    assert both[:7] == C.ids("imagenet_c") and len(both) > 7


def test_mapping_overrides() -> None:
    over = {"ultrasound": ["characters", "speckle_noise", "pixelation"]}
    assert C.corruptions_for("breast ultrasound", ("medical",), over) == ("speckle_noise", "characters")
    assert C.corruptions_for("CT", ("medical",), over) == C.corruptions_for("CT", ("medical",))
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corruptions_for("ultrasound", ("medical",), {"ultrasound": ["no_such_thing"]})


def test_saturate_on_a_grey_image_is_not_applicable() -> None:
    grey = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    entry = C.REGISTRY["saturate"]
    assert not entry.applies(grey)
    assert not entry.applies(np.stack([grey] * 3, axis=-1))  # grey stored as RGB is still grey
    assert entry.applies(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert not entry.applies(None, "chest X-ray") and entry.applies(None, "pathology")
    with pytest.raises(ValueError, match="not applicable"):
        C.apply(grey, "saturate", 1)


def test_declared_properties() -> None:
    everything = set(C.CORRUPTION_PROPERTIES)
    for name in ("jpeg_compression", "speckle_noise", "defocus_blur", "brightness_down"):
        assert set(C.REGISTRY[name].properties) == everything
    for name in ("stain_deposit", "bubble", "characters", "black_corner"):  # local artefacts: no embedding cell
        assert "embedding_consistency" not in C.REGISTRY[name].properties
        assert "corruption_stability" in C.REGISTRY[name].properties
    for name in ("brightness_up", "contrast_up", "gamma_up", "gamma_down", "saturate"):
        assert not {"severity_response", "no_inflation"} & set(C.REGISTRY[name].properties)
    assert "severity_response" not in C.REGISTRY["black_corner"].properties
    assert all(C.REGISTRY[n].why for n in MEDICAL)


@pytest.mark.parametrize("name", [n for n in MEDICAL if "severity_response" in C.REGISTRY[n].properties])
def test_degrading_ones_change_the_image_more_at_severity_5(name: str, rgb_images: list[np.ndarray]) -> None:
    def change(severity: int) -> float:
        return float(np.mean([np.abs(C.apply(im, name, severity, seed=s).astype(int) - im).mean()
                              for im in rgb_images[:2] for s in range(4)]))

    assert change(5) > change(1)


# ------------------------------------------------------------ fidelity to medmnistc


@pytest.fixture(scope="module")
def mc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("medmnistc.corruptions.registry", reason="medmnistc (needs Wand/ImageMagick) not installed")


def _ref(mc, name: str, image: np.ndarray, severity: int, seed: int) -> np.ndarray:
    dataset = C.parameters(name, severity)["source"].split(":")[1]
    obj = mc.CORRUPTIONS_DS[dataset][{"gamma_up": "gamma_corr_up", "gamma_down": "gamma_corr_down"}.get(name, name)]
    np.random.seed(seed)
    random.seed(seed)
    return np.asarray(obj.apply(Image.fromarray(image), severity=severity - 1))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", ["jpeg_compression", "brightness_up", "brightness_down", "contrast_up",
                                  "contrast_down", "gamma_up", "gamma_down", "black_corner"])
def test_fidelity_exact(name: str, mc, rgb_images: list[np.ndarray]) -> None:
    for image in rgb_images:
        for severity in C.SEVERITIES:
            assert np.array_equal(C.apply(image, name, severity), _ref(mc, name, image, severity, 0)), (name, severity)


@pytest.mark.parametrize("name, min_psnr", [("gaussian_blur", 60.0), ("defocus_blur", 50.0), ("saturate", 50.0)])
def test_fidelity_close(name: str, min_psnr: float, mc, rgb_images: list[np.ndarray]) -> None:
    for image in rgb_images[:2]:  # colour (saturate needs it)
        for severity in C.SEVERITIES:
            assert _psnr(C.apply(image, name, severity), _ref(mc, name, image, severity, 0)) >= min_psnr, (name, severity)


@pytest.mark.parametrize("name", ["speckle_noise", "shot_noise"])
def test_fidelity_noise_statistics(name: str, mc, rgb_images: list[np.ndarray]) -> None:
    """Same noise law: the change's mean and spread agree within 3 % of the spread, per severity."""
    for severity in (1, 3, 5):
        ours = np.concatenate([(C.apply(im, name, severity, seed=s).astype(float) - im).ravel()
                               for im in rgb_images for s in range(3)])
        ref = np.concatenate([(_ref(mc, name, im, severity, s).astype(float) - im).ravel()
                              for im in rgb_images for s in range(3)])
        assert abs(ours.mean() - ref.mean()) <= 0.03 * ref.std(), (name, severity)
        assert abs(ours.std() - ref.std()) <= 0.03 * ref.std(), (name, severity)


@pytest.mark.parametrize("name", ["bubble", "stain_deposit", "characters"])
def test_fidelity_drawn_artefacts_cover_alike(name: str, mc, rgb_images: list[np.ndarray]) -> None:
    """Drawn artefacts: the share of changed pixels, averaged over draws, within a factor of 2."""
    for severity in (1, 5):
        ours = np.mean([np.mean(np.any(C.apply(im, name, severity, seed=s) != im, axis=-1))
                        for im in rgb_images for s in range(8)])
        ref = np.mean([np.mean(np.any(_ref(mc, name, im, severity, s) != im, axis=-1))
                       for im in rgb_images for s in range(8)])
        assert 0.5 <= ours / ref <= 2.0, (name, severity, ours, ref)


def test_changed_outputs_carry_a_new_version() -> None:
    """Outputs that changed (content-digest seeding and single-draw kernels; single-precision saturate)
    carry version 2 in their parameters, hence new cache keys; the bit-identical ones keep none."""
    changed = {*RANDOM, "saturate"}
    for name in MEDICAL:
        assert C.parameters(name, 3).get("version") == ("2" if name in changed else None), name


def test_fast_paths_are_exact() -> None:
    """Look-ups two pixels at a time, the float32 luma mean, the grey-as-RGB defocus shortcut and the
    PIL paste of bubbles give exactly what the plain computations give."""
    from miqa_checks.conditions import medical_kernels as K

    rng = np.random.default_rng(11)
    lut = rng.integers(0, 256, 256, dtype=np.uint8)
    for shape in ((31, 33), (40, 48, 3), (600, 600, 3)):
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(K.apply_lut(x, lut), lut[x])
        assert K.pil_luma_mean(x) == int(np.asarray(Image.fromarray(x).convert("L"), dtype=np.float64).mean() + 0.5)
    grey = np.repeat(rng.integers(0, 256, (50, 60, 1), dtype=np.uint8), 3, axis=2)
    fast = K.defocus_blur(grey, 5, 0.2)
    K_grey_plane = K.grey_plane
    try:
        K.grey_plane = lambda x: None  # force the three-plane transform
        assert np.array_equal(fast, K.defocus_blur(grey, 5, 0.2))
    finally:
        K.grey_plane = K_grey_plane
    x = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    out = K.bubble(x, 12, 15, np.random.default_rng(3)).astype(np.uint32)
    blends = [((v := x.astype(np.uint32) * (255 - a) + 255 * a + 128) >> 8) + v >> 8 for a in (100, 130)]
    assert ((out == x) | (out == blends[0]) | (out == blends[1])).all() and (out != x).any()


def test_shot_noise_table_is_poissons_inverse_cdf_without_importing_scipy_stats() -> None:
    """The shot-noise table is scipy.stats.poisson's inverse CDF bit for bit, and making it does not
    import ``scipy.stats`` (~0.6 s of a preparation thread's time, which the judge waited for)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from miqa_checks import conditions as C; "
            "C.apply(np.full((32, 32), 99, np.uint8), 'shot_noise', 3, modality='CT', params='medmnist_c'); "
            "print('scipy.stats' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False"]
    from scipy.stats import poisson

    from miqa_checks.conditions import medical_kernels as K

    for rate in (1.0, 60.0, 2000.0):
        q = (np.arange(K._U12) + 0.5) / K._U12
        kmax = int(rate + 12 * math.sqrt(rate) + 30)
        ks = np.arange(kmax + 1)
        levels = (np.clip(ks / rate, 0, 1) * 255).astype(np.uint8)
        reference = [levels[np.minimum(np.searchsorted(poisson.cdf(ks, v * (rate / 255.0)), q), kmax)] for v in range(256)]
        assert np.array_equal(K._shot_table(rate), np.concatenate(reference))
