"""The judge protocol: score a batch of (image, prompt) requests, with embeddings on demand."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..records import ScoreRequest, ScoreResult

SCORING_METHODS = ("expected", "generate")


@dataclass(frozen=True)
class JudgeSettings:
    """How to run a judge.

    method: ``expected`` (one forward pass, probability-weighted mean of levels 1..5) or
        ``generate`` (greedy decoding + the published parse rule).
    device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
    batch_size: images per forward pass; None means ``auto`` (start large, halve on OOM).
    max_new_tokens: cap for ``generate`` (published: 200).
    system_prompt: optional system message (published: MedGemma only).
    trust_remote_code: allow checkpoints that ship their own code (off by default).
    home: folder for built artefacts (tiny checkpoints), under the result cache.
    seed: run seed (simulated judges, tiny checkpoint weights are fixed separately).
    """

    method: str = "expected"
    device: str = "auto"
    batch_size: int | None = None
    max_new_tokens: int = 200
    system_prompt: str | None = None
    trust_remote_code: bool = False
    home: Path = Path(".miqa_cache")
    seed: int = 0


#: where a judge's embeddings come from (``provenance()["embeddings"]``)
EMBEDDING_SOURCES = ("none", "endpoint", "hidden-state", "simulated")


class JudgeCancelled(KeyboardInterrupt):
    """Raised by ``score`` after :meth:`Judge.cancel`. An interrupt, like Ctrl-C: no ``except
    Exception`` turns it into failed results, so nothing the judge was scoring is stored."""


class Judge(abc.ABC):
    """A quality judge. Subclasses load lazily: constructing one must be cheap."""

    #: the spec the user gave, without ``NAME=`` (``tiny-llava``, ``openai:http://h:8000/v1#m``, ...)
    spec: str

    @property
    def default_batch_size(self) -> int:
        """Requests per ``score`` call when ``--miqa-batch-size`` is not given."""
        return 16

    def embedding_source(self) -> str:
        """One of :data:`EMBEDDING_SOURCES`; ``none``: ``embedding`` always stays None, so the
        properties that need embeddings are not applicable. May ask the server once (cached)."""
        return "none"

    def supports_embeddings(self) -> bool:
        """True when ``score`` fills ``embedding`` for requests with ``embed=True``."""
        return self.embedding_source() != "none"

    def cancel(self) -> None:
        """Stop promptly (any thread, e.g. a signal handler): in-flight and later ``score`` calls
        raise :class:`JudgeCancelled`. Judges that cannot be interrupted ignore it."""

    @abc.abstractmethod
    def identity(self) -> str:
        """A stable string naming the exact model: id + revision or weight hash + method.

        It enters the result-cache key, so a changed checkpoint never reuses old scores.
        May load metadata (not weights) on first call.
        """

    @abc.abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score a batch; one result per request, in order.

        A failure of one item becomes ``ScoreResult.failed(...)`` for that item; the call itself
        raises only when the whole judge is unusable (``JudgeError``).
        """

    def provenance(self) -> dict[str, str]:
        """Facts for run.json (model id, revision, dtype, device, ...); no secrets, no paths."""
        return {"spec": self.spec, "identity": self.identity()}

    def close(self) -> None:
        """Release the model (GPU memory, HTTP sessions)."""
