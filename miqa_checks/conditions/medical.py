"""The ``medical`` corruption set: MedMNIST-C's artefacts, registered like a user's corruptions.

Source of every parameter table: the ``medmnistc`` package, ``medmnistc/corruptions/registry.py``
(``CORRUPTIONS_DS``, v0.1.0; Di Salvo, Doerrich, Ledig, "MedMNIST-C", 2024), whose values are
tuned per MedMNIST dataset for 224 px images. Each corruption keeps the tables of the datasets
that use it; an image gets the table of its modality's reference dataset
(:data:`REFERENCE_DATASET`), else the corruption's default one. The source enters the condition's
parameters (``medmnist_c:<dataset>``), hence its cache key.

Which corruption applies to which modality by default: :data:`DEFAULT_MAPPING` (MedMNIST-C's
per-dataset lists, plus ``characters`` for ultrasound's burnt-in annotations); override it with
:func:`miqa_checks.conditions.corruptions_for`'s ``overrides``. ``saturate`` needs a colour image:
on a grey one it is not applicable (``applies(image)`` is False), never an error.

Properties (``Corruption.properties``): the four corruption properties apply where the artefact
degrades the image more at each severity; ``brightness_up``, ``contrast_up``, ``gamma_up``,
``gamma_down`` and ``saturate`` are intensity changes that can improve visibility at mild
severities, so they get neither ``severity_response`` (no "should fall") nor ``no_inflation``;
``black_corner`` has MedMNIST-C's non-monotone severities (0.90 at 4, 0.95 at 5): no
``severity_response``. Light at import: kernels load on the first call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .modalities import canonical_modality
from .registry import CORRUPTION_PROPERTIES, corruption

SET = "medical"
SOURCE = "medmnist_c"

#: Canonical modality -> the MedMNIST-C dataset whose parameter table it uses.
REFERENCE_DATASET: dict[str, str] = {
    "xray": "chestmnist", "ct": "organamnist", "ultrasound": "breastmnist", "oct": "octmnist",
    "dermoscopy": "dermamnist", "pathology": "pathmnist", "blood": "bloodmnist", "tissue": "tissuemnist",
    "fundus": "retinamnist",
}

_XRAY_CT = ("jpeg_compression", "speckle_noise", "shot_noise", "gaussian_blur", "brightness_up", "brightness_down",
            "contrast_up", "contrast_down", "gamma_up", "gamma_down")
_MICROSCOPY = ("jpeg_compression", "defocus_blur", "brightness_up", "brightness_down", "contrast_up",
               "contrast_down", "saturate", "stain_deposit", "bubble")
#: Canonical modality -> medical corruption ids applied by default (MedMNIST-C's per-dataset lists;
#: ``mr`` and ``other`` have no MedMNIST-C dataset: the modality-neutral digital/blur/intensity ones).
DEFAULT_MAPPING: dict[str, tuple[str, ...]] = {
    "xray": _XRAY_CT,  # chestmnist, pneumoniamnist
    "ct": _XRAY_CT,  # organ{a,c,s}mnist
    "ultrasound": ("jpeg_compression", "speckle_noise", "brightness_up", "brightness_down", "contrast_down",
                   "characters"),  # breastmnist, + burnt-in annotations
    "oct": ("jpeg_compression", "speckle_noise", "defocus_blur", "contrast_down"),  # octmnist
    "dermoscopy": ("jpeg_compression", "speckle_noise", "shot_noise", "defocus_blur", "brightness_up",
                   "brightness_down", "contrast_up", "contrast_down", "black_corner", "characters"),  # dermamnist
    "pathology": _MICROSCOPY,  # pathmnist
    "blood": _MICROSCOPY,  # bloodmnist
    "tissue": ("jpeg_compression", "gaussian_blur", "brightness_up", "brightness_down", "contrast_up",
               "contrast_down"),  # tissuemnist
    "fundus": ("jpeg_compression", "speckle_noise", "defocus_blur", "brightness_down", "contrast_down"),  # retinamnist
    "mr": ("jpeg_compression", "shot_noise", "gaussian_blur", "brightness_up", "brightness_down", "contrast_up",
           "contrast_down"),
    "other": ("jpeg_compression", "gaussian_blur", "brightness_up", "brightness_down", "contrast_up",
              "contrast_down"),
}

_DEGRADES = "the artefact hides or removes image content more at each severity: every corruption property applies"
_INTENSITY = ("an intensity change that can improve visibility at mild severities: stability and embedding only, "
              "no 'should fall' (severity_response) and no no_inflation")
_NO_TREND = ("MedMNIST-C's severities are not monotone (multiplier 0.90 at 4, 0.95 at 5): no severity_response")
_SOME = ("corruption_stability", "embedding_consistency")
_LOCAL = ("an artefact drawn over part of the image (ink, air bubbles, burnt-in text) replaces what the "
          "embedding should represent there, so a displaced embedding is no robustness failure "
          "(the robust simulated judge moves 1.0-1.2 clean spreads on 64 microscopy crops): no "
          "embedding_consistency")
_NO_EMBEDDING = ("corruption_stability", "severity_response", "no_inflation")


def _register(
    id: str,
    kernel: str,
    columns: Sequence[str],
    tables: dict[str, Sequence[Any]],
    default: str,
    *,
    uses_rng: bool = False,
    colour_only: bool = False,
    properties: Sequence[str] = CORRUPTION_PROPERTIES,
    why: str = _DEGRADES,
    version: str = "",
) -> None:
    """Register one MedMNIST-C corruption: ``tables[dataset][severity - 1]`` is one value, or a
    tuple of values, named by ``columns``; ``kernel`` names the function in :mod:`medical_kernels`.
    Random ones are seeded by the image's shared digest (``seeding="digest"``); ``version`` changes
    whenever a corruption's output changes (it enters the cache key)."""

    def resolve(severity: int, params: str, modality: str | None) -> dict[str, Any]:
        dataset = REFERENCE_DATASET.get(canonical_modality(modality), default)
        dataset = dataset if dataset in tables else default
        row = tables[dataset][severity - 1]
        values = row if isinstance(row, tuple) else (row,)
        return {**dict(zip(columns, values)), "source": f"{SOURCE}:{dataset}"}

    def applies_to(image: Any, modality: str | None) -> bool:
        if modality is not None and id not in DEFAULT_MAPPING[canonical_modality(modality)]:
            return False
        if image is not None and colour_only:
            from .medical_kernels import is_colour

            return is_colour(image)
        return True

    def fn(image: Any, severity: int, rng: Any, **values: Any) -> Any:
        from . import medical_kernels

        run: Callable[..., Any] = getattr(medical_kernels, kernel)
        return run(image, *values.values(), rng.generator) if uses_rng else run(image, *values.values())

    fn.__name__ = fn.__qualname__ = id
    fn.__doc__ = f"MedMNIST-C {id}: :func:`medical_kernels.{kernel}` with {', '.join(columns)} per severity."
    corruption(id, set=SET, source=SOURCE, resolve=resolve, applies_to=applies_to, properties=properties, why=why,
               version=version, seeding="digest" if uses_rng else "pixels")(fn)
    TABLES[id] = tables


#: Corruption id -> {MedMNIST-C dataset: per-severity values}, for the docs and the fidelity tests.
TABLES: dict[str, dict[str, Sequence[Any]]] = {}

_ORGAN = ("organamnist", "organcmnist", "organsmnist")


def _same(value: Sequence[Any], *datasets: str) -> dict[str, Sequence[Any]]:
    return {d: value for d in datasets}


# digital --------------------------------------------------------------------------------
_register("jpeg_compression", "jpeg", ("quality",), {
    "pathmnist": (50, 30, 15, 10, 7), "bloodmnist": (50, 30, 15, 10, 7), "dermamnist": (30, 20, 15, 10, 7),
    "retinamnist": (30, 25, 20, 10, 5), "tissuemnist": (25, 20, 15, 10, 7), "octmnist": (30, 15, 10, 7, 5),
    "breastmnist": (50, 30, 15, 10, 7), "chestmnist": (50, 30, 15, 10, 7), "pneumoniamnist": (50, 30, 15, 10, 7),
    **_same((50, 30, 15, 10, 7), *_ORGAN),
}, "chestmnist")

# noise ----------------------------------------------------------------------------------
_register("speckle_noise", "speckle_noise", ("sigma",), {
    "dermamnist": (0.05, 0.15, 0.2, 0.35, 0.45), "retinamnist": (0.10, 0.15, 0.20, 0.25, 0.30),
    "octmnist": (0.15, 0.30, 0.40, 0.50, 0.60), "breastmnist": (0.10, 0.15, 0.20, 0.25, 0.30),
    "chestmnist": (0.05, 0.15, 0.2, 0.35, 0.45), "pneumoniamnist": (0.05, 0.07, 0.10, 0.15, 0.20),
    **_same((0.05, 0.10, 0.20, 0.30, 0.40), *_ORGAN),
}, "breastmnist", uses_rng=True, version="2")
_register("shot_noise", "shot_noise", ("rate",), {
    "dermamnist": (60, 25, 18, 10, 5), "chestmnist": (60, 25, 18, 10, 5),
    "pneumoniamnist": (300, 200, 150, 100, 80), **_same((200, 100, 50, 25, 15), *_ORGAN),
}, "chestmnist", uses_rng=True, version="2")

# blur -----------------------------------------------------------------------------------
_register("defocus_blur", "defocus_blur", ("radius", "alias_blur"), {
    "pathmnist": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
    "bloodmnist": ((2, 0.01), (3, 0.1), (4, 0.1), (5, 0.1), (6, 0.1)),
    "dermamnist": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
    "retinamnist": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
    "octmnist": ((0.5, 0.6), (1, 0.5), (1.5, 0.1), (2.0, 0.5), (2.5, 0.1)),
}, "dermamnist")
_register("gaussian_blur", "gaussian_blur", ("size",), {
    "tissuemnist": (13, 15, 17, 21, 25), "chestmnist": (3, 5, 7, 9, 11), "pneumoniamnist": (3, 5, 7, 9, 11),
    **_same((11, 13, 15, 17, 21), *_ORGAN),
}, "chestmnist")

# intensity ------------------------------------------------------------------------------
_CHEST_UP = (1.1, 1.2, 1.3, 1.4, 1.5)
_register("brightness_up", "brightness", ("factor",), {
    "pathmnist": (1.1, 1.15, 1.2, 1.22, 1.25), "bloodmnist": (1.1, 1.2, 1.3, 1.35, 1.4), "dermamnist": _CHEST_UP,
    "tissuemnist": (1.3, 1.4, 1.5, 1.6, 1.7), "breastmnist": (1.4, 1.5, 1.6, 1.8, 2.0), "chestmnist": _CHEST_UP,
    "pneumoniamnist": _CHEST_UP, **_same((1.2, 1.3, 1.4, 1.5, 1.6), *_ORGAN),
}, "chestmnist", properties=_SOME, why=_INTENSITY)
_HALF = (0.9, 0.8, 0.7, 0.6, 0.5)
_register("brightness_down", "brightness", ("factor",), {
    "pathmnist": (0.85, 0.80, 0.75, 0.72, 0.70), "bloodmnist": _HALF, "dermamnist": _HALF, "retinamnist": _HALF,
    "tissuemnist": (0.8, 0.7, 0.6, 0.5, 0.4), "breastmnist": (0.55, 0.5, 0.45, 0.4, 0.3), "chestmnist": _HALF,
    "pneumoniamnist": _HALF, **_same((0.8, 0.75, 0.7, 0.65, 0.60), *_ORGAN),
}, "chestmnist", why="darkening hides detail more at each severity: every corruption property applies")
_UP = (1.1, 1.2, 1.3, 1.4, 1.6)
_register("contrast_up", "contrast", ("factor",), {
    "pathmnist": _UP, "bloodmnist": (1.1, 1.15, 1.2, 1.25, 1.3), "dermamnist": _UP, "tissuemnist": _UP,
    "chestmnist": _UP, "pneumoniamnist": _UP, **_same((1.3, 1.4, 1.6, 1.7, 1.8), *_ORGAN),
}, "chestmnist", properties=_SOME, why=_INTENSITY)
_DOWN = (0.9, 0.8, 0.7, 0.6, 0.4)
_register("contrast_down", "contrast", ("factor",), {
    "pathmnist": (0.8, 0.7, 0.6, 0.55, 0.5), "bloodmnist": _HALF, "dermamnist": (0.8, 0.7, 0.6, 0.5, 0.4),
    "retinamnist": _DOWN, "tissuemnist": _DOWN, "octmnist": (0.6, 0.4, 0.3, 0.2, 0.15), "breastmnist": _DOWN,
    "chestmnist": _DOWN, "pneumoniamnist": _DOWN, **_same((0.8, 0.7, 0.6, 0.55, 0.5), *_ORGAN),
}, "chestmnist", why="flattening contrast hides detail more at each severity: every corruption property applies")
_register("gamma_up", "gamma", ("gamma",), {
    "chestmnist": _UP, "pneumoniamnist": _UP, **_same((1.3, 1.4, 1.6, 1.8, 2.0), *_ORGAN),
}, "chestmnist", properties=_SOME, why=_INTENSITY)
_register("gamma_down", "gamma", ("gamma",), {
    "chestmnist": _DOWN, "pneumoniamnist": _DOWN, **_same(_DOWN, *_ORGAN),
}, "chestmnist", properties=_SOME, why=_INTENSITY)
_register("saturate", "saturate", ("amount",), {
    "pathmnist": (0.05, 0.10, 0.15, 0.20, 0.25), "bloodmnist": (0.05, 0.10, 0.15, 0.17, 0.20),
}, "pathmnist", colour_only=True, properties=_SOME, why=_INTENSITY + "; colour images only", version="2")

# modality-specific ----------------------------------------------------------------------
# ink_size: MedMNIST-C picks its ink masks by ``max(3, severity index)``: 24 px at severities 1-4, 32 px at 5.
_register("stain_deposit", "stain_deposit", ("max_marks", "ink_size"), {
    "pathmnist": ((1, 24), (2, 24), (3, 24), (4, 24), (5, 32)),
    "bloodmnist": ((1, 24), (2, 24), (3, 24), (3, 24), (3, 32)),
}, "pathmnist", uses_rng=True, properties=_NO_EMBEDDING, why=_LOCAL, version="2")
_register("bubble", "bubble", ("max_radius", "max_bubbles"), {
    "pathmnist": ((7, 15), (10, 15), (12, 15), (15, 20), (17, 25)),
    "bloodmnist": ((5, 10), (7, 10), (10, 10), (12, 12), (15, 12)),
}, "pathmnist", uses_rng=True, properties=_NO_EMBEDDING, why=_LOCAL, version="2")
_register("black_corner", "black_corner", ("multiplier",), {
    "dermamnist": (1.10, 1.05, 1.00, 0.90, 0.95),
}, "dermamnist", properties=("corruption_stability", "no_inflation"), why=_NO_TREND + "; " + _LOCAL)
_register("characters", "characters", ("max_words", "max_letters", "max_font_scale"), {
    "dermamnist": ((1, 6, 0.14), (2, 7, 0.15), (3, 8, 0.16), (4, 9, 0.17), (6, 10, 0.18)),
}, "dermamnist", uses_rng=True, properties=_NO_EMBEDDING, why=_LOCAL, version="2")
