"""Plain records that flow between layers: images, error records, score requests and results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .conditions.registry import NOT_APPLICABLE

#: Reason prefix of a request whose condition image could not be made (e.g. too small to corrupt).
CONDITION_FAILED = "condition "
#: error prefix of a result whose source image could not be read when its pixels were needed
IMAGE_FAILED = "source image unreadable: "


@dataclass(frozen=True)
class ImageRecord:
    """One readable image.

    image: uint8 array, H x W (grey) or H x W x 3 (RGB). Grey stays grey.
    image_id: id relative to its source (never an absolute path), unique within `dataset`.
    dataset: dataset id used in test ids (e.g. ``samples_ct``, ``oct``).
    modality: text put into the prompt's ``{modality}`` (PROTOCOL.md: the dataset id on disk
        for MediMeta-C / MedIMeta; a modality name such as ``CT`` for the embedded samples).
    source, licence: provenance of the file, kept with it into the reports.
    group: images sharing a group are not independent (crops of one source image, frames of one
        clip, slices of one volume, one patient or study); default: the image's own id. Never a
        raw patient field (DICOM / MedIMeta patient ids arrive as salted hashes).
    """

    image_id: str
    dataset: str
    modality: str
    image: np.ndarray = field(repr=False, compare=False)
    source: str = ""
    licence: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.image_id)


@dataclass(frozen=True)
class ErrorRecord:
    """An input that could not be used: the file (relative to its source) and why."""

    dataset: str
    file: str
    reason: str


@dataclass(frozen=True)
class RequestMeta:
    """What a request is about. Real judges ignore it; simulated judges plant behaviour on it.

    condition: ``clean`` or ``<corruption>-<severity>`` (e.g. ``pixelation-3``).
    prompt_id: ``base``, an attribute id (``institution-world_class``) or ``paraphrase-<k>``.
    repeat: 0 normally; 1 for the repeatability copy, which the engine scores in a batch of one.
    """

    dataset: str
    modality: str
    image_id: str
    condition: str = "clean"
    prompt_id: str = "base"
    repeat: int = 0


@dataclass(frozen=True)
class ScoreRequest:
    """One (image, prompt) pair to score.

    image: uint8 H x W or H x W x 3. embed: also return embeddings from the same pass.
    judge_input: what the judge's ``prepare_input(image)`` made from ``image`` ahead, in the
        engine's preparation pool (e.g. the HTTP judge's encoded image); None: the judge makes it.
    """

    image: np.ndarray = field(repr=False, compare=False)
    prompt: str
    meta: RequestMeta
    system_prompt: str | None = None
    embed: bool = False
    judge_input: object = field(default=None, repr=False, compare=False)


#: Most characters of a model's answer (or a failure reason) kept in the store and the reports.
TEXT_CAP = 4096
_CUT_MARK = re.compile(r"…\[cut, \d+ chars\]")


def cap_text(text: str, cap: int = TEXT_CAP) -> str:
    """``text`` cut to its first ``cap`` characters plus ``…[cut, N chars]`` (N: the full length);
    unchanged when within the cap or already cut."""
    if len(text) <= cap or (len(text) - cap < 40 and _CUT_MARK.fullmatch(text, cap)):
        return text
    return f"{text[:cap]}…[cut, {len(text)} chars]"


def is_cut(text: str, cap: int = TEXT_CAP) -> bool:
    """Whether ``text`` was cut by :func:`cap_text`."""
    return len(text) > cap and _CUT_MARK.fullmatch(text, cap) is not None


@dataclass
class ScoreResult:
    """A judge's answer to one request.

    score: quality on the 1..5 scale, NaN when no score could be obtained.
    probs: P(level 1..5), shape (5,), for ``expected`` scoring; None otherwise.
    parse_ok: False when ``generate`` output did not match the parse rule (score is NaN).
    raw_text: generated text (empty for ``expected``).
    method: ``expected`` or ``generate`` (what was actually used).
    error: reason when the request failed (score NaN); None on success.
    embedding: float32 (D,), last hidden layer mean-pooled over all tokens (published definition).
    image_embedding: float32 (E,), vision-tower output pooled over image tokens.
    """

    score: float
    method: str
    probs: tuple[float, ...] | None = None
    parse_ok: bool = True
    raw_text: str = ""
    error: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    image_embedding: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Cap ``raw_text`` and ``error`` (a runaway answer must not fill the store and scores.csv)."""
        self.raw_text = cap_text(self.raw_text)
        if self.error is not None:
            self.error = cap_text(self.error)

    @classmethod
    def failed(cls, method: str, reason: str, raw_text: str = "") -> "ScoreResult":
        """A result that records a failure instead of dropping the request."""
        return cls(score=float("nan"), method=method, parse_ok=False, raw_text=raw_text, error=reason)

    def loss_stage(self, *, count_parse: bool = True) -> str | None:
        """Why this result gives no usable score, as the ``stage`` of ``errors.csv``: ``data`` (the
        source image could not be read when its pixels were needed), ``corruption``
        (the condition image could not be made), ``not_applicable`` (the condition does not apply
        to this image: no error), ``score`` (the judge failed), ``parse`` (the answer did not
        parse; only with ``count_parse``), or None when the score is usable."""
        if self.error:
            if self.error.startswith(IMAGE_FAILED):
                return "data"
            if not self.error.startswith(CONDITION_FAILED):
                return "score"
            return "not_applicable" if self.error.endswith(NOT_APPLICABLE) else "corruption"
        if count_parse and not self.parse_ok:
            return "parse"
        return None
