"""The seven corruptions x five severities of the protocol (PROTOCOL.md), seeded and batched.

Definitions and parameters follow ImageNet-C as implemented by the imagecorruptions
package (``params="imagenet_c"``, the default); ``params="medmnist_c"`` swaps in the
MedMNIST-C pixelation (BOX upsampling, modality-tuned factors for ``oct`` and
``pneumonia``) and falls back to the ImageNet-C values everywhere else.

Images are uint8 ``H x W`` (grey) or ``H x W x 3`` (RGB), at least 8 x 8; the output
has the same shape and dtype. Grey images are corrupted as grey (never stacked), so a
grey image's noise is one draw per pixel where imagecorruptions draws three.

Randomness: every draw comes from a numpy Generator seeded with
``sha256(image shape, dtype, bytes, corruption, severity, run seed)``, so a result
depends on those inputs only, never on call order, batching or process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from miqa_checks import _corruption_kernels as kernels

CORRUPTIONS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "gaussian_noise",
    "impulse_noise",
    "motion_blur",
    "pixelation",
    "zoom_blur",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
PARAMETER_SETS: tuple[str, ...] = ("imagenet_c", "medmnist_c")

MIN_SIDE = 8

# ImageNet-C parameters per severity 1..5 (PROTOCOL.md, imagecorruptions).
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_GAUSSIAN = (0.08, 0.12, 0.18, 0.26, 0.38)
_IMPULSE = (0.03, 0.06, 0.09, 0.17, 0.27)
_MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
_ZOOM = ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03))
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
# MedMNIST-C pixelation factors for the modalities where they are known.
_MEDMNIST_PIXELATE = {
    "oct": (0.30, 0.25, 0.20, 0.15, 0.10),
    "pneumonia": (0.8, 0.7, 0.6, 0.5, 0.4),
}
_MODALITY_ALIASES = {"octmnist": "oct", "pneumoniamnist": "pneumonia"}


def _check_name_severity(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; valid: {', '.join(map(str, SEVERITIES))}")


def _modality_profile(modality: str | None) -> str | None:
    """The MedMNIST-C pixelation profile for a modality/dataset id, or None."""
    if modality is None:
        return None
    key = modality.strip().lower()
    key = _MODALITY_ALIASES.get(key, key)
    return key if key in _MEDMNIST_PIXELATE else None


def parameters(name: str, severity: int, params: str = "imagenet_c", modality: str | None = None) -> dict[str, Any]:
    """The JSON-able parameters of one condition (they enter cache keys).

    ``modality`` only matters for ``params="medmnist_c"`` pixelation. Keys:
    ``corruption, severity, params, source`` plus the corruption's own values.
    """
    _check_name_severity(name, severity)
    if params not in PARAMETER_SETS:
        raise ValueError(f"unknown parameter set {params!r}; valid: {', '.join(PARAMETER_SETS)}")
    i = int(severity) - 1
    out: dict[str, Any] = {"corruption": name, "severity": int(severity), "params": params, "source": "imagenet_c"}
    if name == "brightness":
        out["delta"] = _BRIGHTNESS[i]
    elif name == "contrast":
        out["factor"] = _CONTRAST[i]
    elif name == "gaussian_noise":
        out["sigma"] = _GAUSSIAN[i]
    elif name == "impulse_noise":
        out["amount"] = _IMPULSE[i]
    elif name == "motion_blur":
        out["radius"], out["sigma"] = _MOTION[i]
        out["angle_range"] = [-45, 45]
    elif name == "zoom_blur":
        out["zoom_start"], out["zoom_stop"], out["zoom_step"] = _ZOOM[i]
    else:  # pixelation
        out["factor"], out["upsample"] = _PIXELATE[i], "nearest"
        if params == "medmnist_c":
            profile = _modality_profile(modality)
            out["upsample"] = "box"
            out["source"] = "medmnist_c" if profile is None else f"medmnist_c:{profile}"
            if profile is not None:
                out["factor"] = _MEDMNIST_PIXELATE[profile][i]
    return out


def condition_id(name: str, severity: int) -> str:
    """``"pixelation-3"`` for (``"pixelation"``, 3); ValueError on unknown values."""
    _check_name_severity(name, severity)
    return f"{name}-{int(severity)}"


def parse_condition(cond: str) -> tuple[str, int] | None:
    """Inverse of :func:`condition_id`; ``None`` for ``"clean"``; ValueError on anything else."""
    if cond == "clean":
        return None
    name, sep, sev = str(cond).rpartition("-")
    if not sep or name not in CORRUPTIONS or sev not in {str(s) for s in SEVERITIES}:
        raise ValueError(
            f"bad condition {cond!r}: expected 'clean' or '<corruption>-<severity>' with corruption in "
            f"{', '.join(CORRUPTIONS)} and severity in {', '.join(map(str, SEVERITIES))}"
        )
    return name, int(sev)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be H x W (grey) or H x W x 3 (RGB), got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {image.shape[:2]}")


def _rng(image: np.ndarray, name: str, severity: int, seed: int) -> np.random.Generator:
    """Generator seeded by sha256 over (shape, dtype, pixel bytes, corruption, severity, run seed)."""
    h = hashlib.sha256(b"miqa-checks/corruptions/v1\0")
    h.update(f"{image.shape}|{image.dtype.str}|{name}|{int(severity)}|{int(seed)}\0".encode())
    h.update(np.ascontiguousarray(image).data)
    return np.random.Generator(np.random.PCG64(int.from_bytes(h.digest(), "little")))


def _motion_angle(image: np.ndarray, severity: int, seed: int) -> float:
    """The motion-blur angle (degrees, uniform in [-45, 45]) drawn for this image and seed."""
    return float(_rng(image, "motion_blur", severity, seed).uniform(-45, 45))


def _zooms(p: dict[str, Any]) -> tuple[float, ...]:
    return tuple(float(z) for z in np.arange(p["zoom_start"], p["zoom_stop"], p["zoom_step"]))


def _apply_checked(image: np.ndarray, p: dict[str, Any], seed: int) -> np.ndarray:
    name, severity = p["corruption"], p["severity"]
    if name == "brightness":
        return kernels.brightness(image, p["delta"])
    if name == "contrast":
        return kernels.contrast(image, p["factor"])
    if name == "gaussian_noise":
        return kernels.gaussian_noise(image, p["sigma"], _rng(image, name, severity, seed))
    if name == "impulse_noise":
        return kernels.impulse_noise(image, p["amount"], _rng(image, name, severity, seed))
    if name == "motion_blur":
        return kernels.motion_blur(image, p["radius"], p["sigma"], _motion_angle(image, severity, seed))
    if name == "zoom_blur":
        return kernels.zoom_blur(image, _zooms(p))
    return kernels.pixelate(image, p["factor"], p["upsample"])


def apply(
    image: np.ndarray,
    name: str,
    severity: int,
    seed: int = 0,
    params: str = "imagenet_c",
    modality: str | None = None,
) -> np.ndarray:
    """Corrupt one uint8 image (H x W or H x W x 3, sides >= 8); same shape and dtype out."""
    p = parameters(name, severity, params, modality)
    _check_image(image)
    return _apply_checked(image, p, seed)


def apply_batch(
    images: Sequence[np.ndarray],
    name: str,
    severity: int,
    seed: int = 0,
    params: str = "imagenet_c",
    modality: str | None = None,
) -> list[np.ndarray]:
    """``[apply(im, name, severity, seed, params, modality) for im in images]``, bit for bit.

    All images are validated before any is corrupted. The work shared across a batch
    is what is cached per parameter set and image size (lookup tables, noise tables,
    zoom operators); stacking same-sized images into one zoom-blur product was measured
    slower (its intermediates leave the cache), and noise and the motion angle are per
    image by definition.
    """
    p = parameters(name, severity, params, modality)
    for image in images:
        _check_image(image)
    return [_apply_checked(image, p, seed) for image in images]
