"""The seven ImageNet-C corruptions of the protocol (PROTOCOL.md), registered like a user's.

Definitions and parameters follow ImageNet-C as implemented by the imagecorruptions package
(``params="imagenet_c"``, the default); ``params="medmnist_c"`` swaps in the MedMNIST-C
pixelation (BOX upsampling, modality-tuned factors for ``oct`` and ``pneumonia``) and keeps the
ImageNet-C values everywhere else.

Grey images are corrupted as grey (never stacked), so a grey image's noise is one draw per
pixel where imagecorruptions draws three. Light at import: the kernels load on the first call.
"""

from __future__ import annotations

from typing import Any

from .registry import corruption

SET = "imagenet_c"
_SOURCE = "imagenet_c"
_WHY = "a generic acquisition/processing artefact; heavier severities lose detail or contrast"

# ImageNet-C parameters per severity 1..5 (PROTOCOL.md, imagecorruptions).
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
# MedMNIST-C pixelation factors for the modalities where they are known.
_MEDMNIST_PIXELATE = {
    "oct": (0.30, 0.25, 0.20, 0.15, 0.10),
    "pneumonia": (0.8, 0.7, 0.6, 0.5, 0.4),
}
_MODALITY_ALIASES = {"octmnist": "oct", "pneumoniamnist": "pneumonia"}


@corruption("brightness", set=SET, source=_SOURCE, table={"delta": (0.1, 0.2, 0.3, 0.4, 0.5)},
            why="brightening by up to 0.5 of the range washes out dark detail")
def brightness(image: Any, severity: int, rng: Any, delta: float) -> Any:
    """``+delta`` on HSV's V (RGB) or on the value (grey), values in [0, 1]."""
    from . import kernels

    return kernels.brightness(image, delta)


@corruption("contrast", set=SET, source=_SOURCE, table={"factor": (0.4, 0.3, 0.2, 0.1, 0.05)}, why=_WHY)
def contrast(image: Any, severity: int, rng: Any, factor: float) -> Any:
    """``(x - mean) * factor + mean`` per channel."""
    from . import kernels

    return kernels.contrast(image, factor)


@corruption("gaussian_noise", set=SET, source=_SOURCE, table={"sigma": (0.08, 0.12, 0.18, 0.26, 0.38)}, why=_WHY)
def gaussian_noise(image: Any, severity: int, rng: Any, sigma: float) -> Any:
    """``x / 255 + N(0, sigma)``, clipped; one draw per sample."""
    from . import kernels

    return kernels.gaussian_noise(image, sigma, rng)


@corruption("impulse_noise", set=SET, source=_SOURCE, table={"amount": (0.03, 0.06, 0.09, 0.17, 0.27)}, why=_WHY)
def impulse_noise(image: Any, severity: int, rng: Any, amount: float) -> Any:
    """Salt and pepper: each sample flips with probability ``amount``."""
    from . import kernels

    return kernels.impulse_noise(image, amount, rng)


@corruption("motion_blur", set=SET, source=_SOURCE, why=_WHY, table={
    "radius": (10, 15, 15, 15, 20), "sigma": (3, 5, 8, 12, 15), "angle_range": ([-45, 45],) * 5,
})
def motion_blur(image: Any, severity: int, rng: Any, radius: int, sigma: float, angle_range: list[int]) -> Any:
    """Linear motion kernel at an angle drawn uniformly from ``angle_range`` (degrees)."""
    from . import kernels

    return kernels.motion_blur(image, radius, sigma, float(rng.uniform(*angle_range)))


def _modality_profile(modality: str | None) -> str | None:
    """The MedMNIST-C pixelation profile for a modality/dataset id, or None."""
    if modality is None:
        return None
    key = modality.strip().lower()
    key = _MODALITY_ALIASES.get(key, key)
    return key if key in _MEDMNIST_PIXELATE else None


def _pixelation_values(severity: int, params: str, modality: str | None) -> dict[str, Any]:
    """ImageNet-C factor with NEAREST upsampling; MedMNIST-C: BOX upsampling, modality factors."""
    i = severity - 1
    out: dict[str, Any] = {"factor": _PIXELATE[i], "upsample": "nearest"}
    if params == "medmnist_c":
        profile = _modality_profile(modality)
        out["upsample"] = "box"
        out["source"] = "medmnist_c" if profile is None else f"medmnist_c:{profile}"
        if profile is not None:
            out["factor"] = _MEDMNIST_PIXELATE[profile][i]
    return out


@corruption("pixelation", set=SET, source=_SOURCE, resolve=_pixelation_values, why=_WHY)
def pixelation(image: Any, severity: int, rng: Any, factor: float, upsample: str) -> Any:
    """BOX downscale to ``int(side * factor)``, then ``upsample`` back."""
    from . import kernels

    return kernels.pixelate(image, factor, upsample)


@corruption("zoom_blur", set=SET, source=_SOURCE, why=_WHY, table={
    "zoom_start": (1, 1, 1, 1, 1), "zoom_stop": (1.11, 1.16, 1.21, 1.26, 1.31),
    "zoom_step": (0.01, 0.01, 0.02, 0.02, 0.03),
})
def zoom_blur(image: Any, severity: int, rng: Any, zoom_start: float, zoom_stop: float, zoom_step: float) -> Any:
    """Mean of the image and its centre zooms ``arange(zoom_start, zoom_stop, zoom_step)``."""
    import numpy as np

    from . import kernels

    return kernels.zoom_blur(image, tuple(float(z) for z in np.arange(zoom_start, zoom_stop, zoom_step)))
