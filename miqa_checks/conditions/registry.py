"""The corruption registry: one entry per corruption id, built-in and user corruptions alike.

An entry holds the id, its severities, a pure function ``fn(image, severity, rng, **values)``
(uint8 ``H x W`` or ``H x W x 3`` in, same shape and dtype out), the per-severity parameter
values passed to it (they enter cache keys), where those values come from, which modalities
and images it applies to, and which corruption properties it is meant for.

Light at import (no numpy): plugin-time code reads ids and metadata; numpy and the kernels load
on the first :func:`apply`.

Randomness: every corruption draws from one ``numpy.random.Generator`` seeded by sha256 over the
image (shape, dtype, every pixel byte), the corruption id, the severity and the run seed, so a
result depends on those inputs only, never on call order, batching or process. Two schemes:
``seeding="pixels"`` (the default, and the ``imagenet_c`` set's) hashes the pixels after the
condition's header, once per call (:func:`rng_for`); ``seeding="digest"`` (the ``medical`` set)
hashes the condition's header with the image's sha256 digest (:func:`image_digest`), which is
computed once per read-only image object and shared by every corruption and severity of it.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

#: End of the reason of a condition that does not apply to an image (e.g. saturate on a grey
#: image): the cell is "not applicable" there, not an error (``ScoreResult.loss_stage``).
NOT_APPLICABLE = "not applicable"

if TYPE_CHECKING:
    import numpy as np

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
PARAMETER_SETS: tuple[str, ...] = ("imagenet_c", "medmnist_c")
#: The corruption properties an entry can be meant for (matrix property names).
CORRUPTION_PROPERTIES: tuple[str, ...] = (
    "corruption_stability", "severity_response", "no_inflation", "embedding_consistency",
)
MIN_SIDE = 8
_SEED_DOMAIN = b"miqa-checks/corruptions/v1\0"
_DIGEST_DOMAIN = b"miqa-checks/corruptions/digest/v1\0"
#: Seeding schemes (see the module docstring).
SEEDINGS: tuple[str, ...] = ("pixels", "digest")
#: Keys of a condition's parameters that identify it rather than parametrise ``fn``.
_ID_KEYS = frozenset({"corruption", "severity", "params", "source", "version"})
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")

#: ``resolve(severity, params, modality) -> values``: parameter values for one condition.
Resolver = Callable[[int, str, "str | None"], dict[str, Any]]
#: ``applies_to(image, modality) -> bool``; ``image`` may be None (ask by modality only).
Applicability = Callable[[Any, "str | None"], bool]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption. ``table``: value name -> one value per severity."""

    id: str
    fn: Callable[..., Any]
    severities: tuple[int, ...] = SEVERITIES
    set: str = "user"
    table: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    source: str = ""
    resolve: Resolver | None = None
    applies_to: Applicability | None = None
    properties: tuple[str, ...] = CORRUPTION_PROPERTIES
    why: str = ""
    version: str = ""
    seeding: str = "pixels"

    def values(self, severity: int, params: str = "imagenet_c", modality: str | None = None) -> dict[str, Any]:
        """The keyword values ``fn`` gets for one severity (table row, or ``resolve``'s answer)."""
        self.check_severity(severity)
        if self.resolve is not None:
            return self.resolve(int(severity), params, modality)
        i = self.severities.index(int(severity))
        return {name: column[i] for name, column in self.table.items()}

    def parameters(self, severity: int, params: str = "imagenet_c", modality: str | None = None) -> dict[str, Any]:
        """JSON-able parameters of one condition (they enter cache keys):
        ``corruption, severity, params, source`` plus the values (a resolver may set ``source``)."""
        out: dict[str, Any] = {"corruption": self.id, "severity": int(severity), "params": params,
                               "source": self.source or self.set}
        if self.version:
            out["version"] = self.version
        out.update(self.values(severity, params, modality))
        return out

    def check_severity(self, severity: Any) -> None:
        if isinstance(severity, bool) or not isinstance(severity, int) and not _is_np_int(severity) \
                or severity not in self.severities:
            raise ValueError(f"unknown severity {severity!r} for {self.id}; valid: {', '.join(map(str, self.severities))}")

    def applies(self, image: Any = None, modality: str | None = None) -> bool:
        """Whether this corruption can be applied (False: the cell is "not applicable", not an error).

        ``image``: a uint8 array, or None to ask by modality alone.
        """
        return True if self.applies_to is None else bool(self.applies_to(image, modality))


def _is_np_int(value: Any) -> bool:
    import numpy as np

    return isinstance(value, np.integer)


class Registry:
    """Corruption id -> :class:`Corruption`, in registration order (the built-in sets first)."""

    def __init__(self) -> None:
        self._entries: dict[str, Corruption] = {}

    def add(self, entry: Corruption) -> Corruption:
        if not entry.id or set(entry.id) - _ID_CHARS or entry.id[0].isdigit():
            raise ValueError(f"bad corruption id {entry.id!r}: lower-case letters, digits and '_', not first a digit")
        if entry.id in self._entries and self._entries[entry.id].fn is not entry.fn:
            raise ValueError(f"corruption {entry.id!r} is already registered (set {self._entries[entry.id].set})")
        sev = entry.severities
        if not sev or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sev) or list(sev) != sorted(set(sev)):
            raise ValueError(f"{entry.id}: severities must be increasing positive integers, got {sev!r}")
        for name, column in entry.table.items():
            if name in _ID_KEYS:
                raise ValueError(f"{entry.id}: table column {name!r} is reserved ({', '.join(sorted(_ID_KEYS))})")
            if len(column) < len(sev):
                raise ValueError(f"{entry.id}: table column {name!r} has {len(column)} values for {len(sev)} severities")
        if entry.seeding not in SEEDINGS:
            raise ValueError(f"{entry.id}: unknown seeding {entry.seeding!r}; known: {', '.join(SEEDINGS)}")
        unknown = set(entry.properties) - set(CORRUPTION_PROPERTIES)
        if unknown:
            raise ValueError(f"{entry.id}: unknown properties {sorted(unknown)}; known: {', '.join(CORRUPTION_PROPERTIES)}")
        self._entries[entry.id] = entry
        return entry

    def __getitem__(self, name: str) -> Corruption:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown corruption {name!r}; valid: {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def ids(self, *sets: str) -> tuple[str, ...]:
        """Ids in registration order, of the given sets (all sets when none is given)."""
        return tuple(k for k, e in self._entries.items() if not sets or e.set in sets)

    def sets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.set for e in self._entries.values()))


REGISTRY = Registry()


def corruption(
    id: str,
    *,
    severities: Iterable[int] = SEVERITIES,
    set: str = "user",
    table: Mapping[str, Sequence[Any]] | None = None,
    source: str = "",
    applies_to: Applicability | None = None,
    properties: Iterable[str] = CORRUPTION_PROPERTIES,
    why: str = "",
    version: str = "",
    resolve: Resolver | None = None,
    seeding: str = "pixels",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(image, severity, rng, **table row)`` under ``id``; returns ``fn`` unchanged.

    >>> @corruption("jpeg_q", table={"quality": (80, 60, 40, 20, 10)}, source="my lab")
    ... def jpeg_q(image, severity, rng, quality): ...
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY.add(Corruption(
            id=id, fn=fn, severities=tuple(severities), set=set, table=dict(table or {}), source=source,
            resolve=resolve, applies_to=applies_to, properties=tuple(properties), why=why, version=version,
            seeding=seeding,
        ))
        return fn

    return register


# ------------------------------------------------------------------ conditions


def condition_id(name: str, severity: int) -> str:
    """``"pixelation-3"`` for (``"pixelation"``, 3); ValueError on unknown values."""
    REGISTRY[name].check_severity(severity)
    return f"{name}-{int(severity)}"


def parse_condition(cond: str) -> tuple[str, int] | None:
    """Inverse of :func:`condition_id`; ``None`` for ``"clean"``; ValueError on anything else."""
    if cond == "clean":
        return None
    name, sep, sev = str(cond).rpartition("-")
    entry = REGISTRY._entries.get(name)
    if not sep or entry is None or sev not in {str(s) for s in entry.severities}:
        raise ValueError(
            f"bad condition {cond!r}: expected 'clean' or '<corruption>-<severity>' with corruption in "
            f"{', '.join(REGISTRY.ids())} and a severity it has (1..5 for the built-in ones)"
        )
    return name, int(sev)


def parameters(name: str, severity: int, params: str = "imagenet_c", modality: str | None = None) -> dict[str, Any]:
    """The JSON-able parameters of one condition (they enter cache keys); see :meth:`Corruption.parameters`."""
    entry = REGISTRY[name]
    entry.check_severity(severity)
    if params not in PARAMETER_SETS:
        raise ValueError(f"unknown parameter set {params!r}; valid: {', '.join(PARAMETER_SETS)}")
    return entry.parameters(severity, params, modality)


# ------------------------------------------------------------------- applying


def check_image(image: Any) -> None:
    """ValueError unless uint8 ``H x W`` or ``H x W x 3`` with both sides >= 8."""
    import numpy as np

    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be H x W (grey) or H x W x 3 (RGB), got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {image.shape[:2]}")


def rng_for(image: np.ndarray, name: str, severity: int, seed: int) -> np.random.Generator:
    """Generator seeded by sha256 over (shape, dtype, pixel bytes, corruption id, severity, run seed)."""
    import numpy as np

    h = hashlib.sha256(_SEED_DOMAIN)
    h.update(f"{image.shape}|{image.dtype.str}|{name}|{int(severity)}|{int(seed)}\0".encode())
    h.update(np.ascontiguousarray(image).data)
    return np.random.Generator(np.random.PCG64(int.from_bytes(h.digest(), "little")))


#: id(image) -> (weak reference to it, its digest), for read-only images only (see image_digest).
_DIGESTS: dict[int, tuple[weakref.ref, bytes]] = {}
_MAX_DIGESTS = 4096


def _read_only(image: np.ndarray) -> bool:
    """True when the array and every array it views are read-only and the memory is the arrays'
    own or an immutable ``bytes`` object (e.g. ``np.asarray`` of a PIL image)."""
    a: Any = image
    while hasattr(a, "flags") and hasattr(a, "base"):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None or isinstance(a, bytes)


def image_digest(image: np.ndarray) -> bytes:
    """sha256 over (shape, dtype, every pixel byte). Memoised per array object while the array is
    alive and read-only (as the suite's images are): the digest of a writable array is recomputed
    at every call, since its pixels may change between calls. (Numpy lets the owner of a read-only
    array make it writable again; such an array must not be changed after its digest was taken.)"""
    import numpy as np

    key = id(image)
    hit = _DIGESTS.get(key)
    if hit is not None and hit[0]() is image:
        return hit[1]
    h = hashlib.sha256(f"{image.shape}|{image.dtype.str}\0".encode())
    h.update(np.ascontiguousarray(image).data)
    digest = h.digest()
    if _read_only(image):
        if len(_DIGESTS) >= _MAX_DIGESTS:
            _DIGESTS.clear()
        _DIGESTS[key] = (weakref.ref(image, lambda ref, k=key: _forget(k, ref)), digest)
    return digest


def _forget(key: int, ref: weakref.ref) -> None:
    if _DIGESTS.get(key, (None,))[0] is ref:
        del _DIGESTS[key]


def rng_from_digest(digest: bytes, name: str, severity: int, seed: int) -> np.random.Generator:
    """Generator seeded by sha256 over (corruption id, severity, run seed, the image's digest)."""
    import numpy as np

    h = hashlib.sha256(_DIGEST_DOMAIN)
    h.update(f"{name}|{int(severity)}|{int(seed)}\0".encode())
    h.update(digest)
    return np.random.Generator(np.random.PCG64(int.from_bytes(h.digest(), "little")))


class LazyRng:
    """The draw source a corruption gets: a ``numpy.random.Generator`` (every Generator method works
    on it), seeded on first use (:func:`rng_for`, or :func:`rng_from_digest` for ``seeding="digest"``),
    so a corruption that draws nothing never hashes the image. ``.generator`` is the Generator
    itself (for libraries that need the real type)."""

    __slots__ = ("_args", "_gen", "_digest")

    def __init__(self, image: np.ndarray, name: str, severity: int, seed: int, digest: bool = False) -> None:
        self._args = (image, name, severity, seed)
        self._gen: np.random.Generator | None = None
        self._digest = digest

    @property
    def generator(self) -> np.random.Generator:
        if self._gen is None:
            image, name, severity, seed = self._args
            self._gen = (rng_from_digest(image_digest(image), name, severity, seed) if self._digest
                         else rng_for(image, name, severity, seed))
        return self._gen

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator, name)


def _fn_values(p: dict[str, Any]) -> dict[str, Any]:
    """The values ``fn`` is called with: a condition's parameters less the identifying keys."""
    return {k: v for k, v in p.items() if k not in _ID_KEYS}


def _apply_checked(image: np.ndarray, entry: Corruption, severity: int, values: dict[str, Any], seed: int) -> np.ndarray:
    import numpy as np

    if not entry.applies(image, None):
        raise ValueError(f"{entry.id} does not apply to this image (shape {image.shape}): {NOT_APPLICABLE}")
    out = entry.fn(image, int(severity), LazyRng(image, entry.id, severity, seed, entry.seeding == "digest"), **values)
    if not isinstance(out, np.ndarray) or out.shape != image.shape or out.dtype != np.uint8:
        got = f"{type(out).__name__} {getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}"
        raise ValueError(f"corruption {entry.id} returned {got}, expected uint8 of shape {image.shape}")
    return out


def apply(
    image: np.ndarray, name: str, severity: int, seed: int = 0, params: str = "imagenet_c", modality: str | None = None,
) -> np.ndarray:
    """Corrupt one uint8 image (H x W or H x W x 3, sides >= 8); same shape and dtype out."""
    values = _fn_values(parameters(name, severity, params, modality))
    check_image(image)
    return _apply_checked(image, REGISTRY[name], severity, values, seed)


def apply_batch(
    images: Sequence[np.ndarray], name: str, severity: int, seed: int = 0, params: str = "imagenet_c",
    modality: str | None = None,
) -> list[np.ndarray]:
    """``[apply(im, name, severity, seed, params, modality) for im in images]``, bit for bit.

    All images are validated before any is corrupted; the parameters are resolved once. The work
    shared across a batch is cached by the kernels per parameter set and image size.
    """
    values = _fn_values(parameters(name, severity, params, modality))
    for image in images:
        check_image(image)
    entry = REGISTRY[name]
    return [_apply_checked(image, entry, severity, values, seed) for image in images]
