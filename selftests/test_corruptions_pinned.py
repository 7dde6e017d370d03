"""The built-in corruptions are frozen: their outputs and parameters hash to values computed
with the code before the corruption registry (commit 4d4bf8f). A refactor that changes one
pixel of one condition image, or one cache-key parameter, fails here."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from miqa_checks import conditions as C

SEVEN = ("brightness", "contrast", "gaussian_noise", "impulse_noise", "motion_blur", "pixelation", "zoom_blur")

#: sha256 over every output below, computed with the pre-registry ``miqa_checks.corruptions.apply``.
OUTPUTS_SHA256 = "cbeab6bda13000eb26af7cbc6173311992b0f6f612706795e7021d45abf0a271"
#: sha256 over every ``parameters(...)`` dict below (JSON, sorted keys), same code.
PARAMETERS_SHA256 = "323b76867b155607867cbe4de0dd4a74024af4f60be23902c548c8f3ad75d3d0"


def _images() -> list[np.ndarray]:
    """Grey and RGB, square and not, smallest allowed side, flat, smooth and noisy content."""
    rng = np.random.default_rng(20261201)
    yy, xx = np.mgrid[0:96, 0:80]
    smooth = ((np.sin(yy / 7.0) + np.cos(xx / 5.0)) * 60 + 128).astype(np.uint8)
    return [
        rng.integers(0, 256, size=(64, 64), dtype=np.uint8),
        rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8),
        smooth,
        np.stack([smooth, smooth[::-1], 255 - smooth], axis=2),
        np.full((8, 8), 200, dtype=np.uint8),
        np.zeros((9, 12, 3), dtype=np.uint8),
    ]


def _outputs_digest() -> str:
    h = hashlib.sha256()
    for image in _images():
        for params, modality in (("imagenet_c", None), ("medmnist_c", None), ("medmnist_c", "OCT"), ("medmnist_c", "pneumoniamnist")):
            for name in SEVEN:
                for severity in (1, 2, 3, 4, 5):
                    for seed in (0, 7):
                        out = C.apply(image, name, severity, seed=seed, params=params, modality=modality)
                        h.update(f"{name}|{severity}|{seed}|{params}|{modality}|{out.shape}|{out.dtype}".encode())
                        h.update(np.ascontiguousarray(out).data)
    return h.hexdigest()


def _parameters_digest() -> str:
    rows = [
        C.parameters(name, severity, params, modality=modality)
        for params in ("imagenet_c", "medmnist_c")
        for modality in (None, "oct", "pneumonia", "ct")
        for name in SEVEN
        for severity in (1, 2, 3, 4, 5)
    ]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def test_builtin_outputs_unchanged() -> None:
    assert _outputs_digest() == OUTPUTS_SHA256


def test_builtin_parameters_unchanged() -> None:
    assert _parameters_digest() == PARAMETERS_SHA256


def test_batch_equals_single() -> None:
    images = _images()
    for name in SEVEN:
        batch = C.apply_batch(images, name, 3, seed=5)
        for image, out in zip(images, batch):
            assert np.array_equal(out, C.apply(image, name, 3, seed=5))
