"""Judge adapters, chosen by the kind of the ``--miqa-model`` spec (see :mod:`.spec`).

``tiny-<arch>``       offline tiny checkpoint built on first use (transformers path)
``openai:<url>#<m>``  OpenAI-compatible server
``sim-robust``, ``sim-paper``, ``sim:<knob>=<value>,...``  simulated judges with planted behaviour
a folder / hub id     local checkpoint folder or Hugging Face id (transformers path)

Any of them may be written ``NAME=SPEC`` to choose the label used in test ids and reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .base import SCORING_METHODS, Judge, JudgeCancelled, JudgeSettings
from .spec import ModelSpec, model_label, parse_model_spec, validate_specs

__all__ = [
    "Judge", "JudgeCancelled", "JudgeSettings", "SCORING_METHODS", "ModelSpec", "load_judge", "model_label",
    "parse_model_spec", "validate_spec", "validate_specs",
]


def _load_sim(spec: ModelSpec, settings: JudgeSettings) -> Judge:
    from .simulated import SimulatedJudge

    return SimulatedJudge(spec.target, settings)


def _check_sim(spec: ModelSpec) -> None:
    from .simulated import parse_spec

    parse_spec(spec.target)  # the knob grammar; MiqaUsageError names the bad knob


def _load_openai(spec: ModelSpec, settings: JudgeSettings) -> Judge:
    from .openai_judge import OpenAIJudge

    return OpenAIJudge(spec.target, settings)


def _load_tiny(spec: ModelSpec, settings: JudgeSettings) -> Judge:
    from .tiny import tiny_checkpoint
    from .transformers_judge import TransformersJudge

    return TransformersJudge(spec.target, settings, checkpoint_factory=lambda: tiny_checkpoint(spec.target, settings.home))


def _check_tiny(spec: ModelSpec) -> None:
    from ..errors import MiqaUsageError
    from .tiny import known_tiny_specs

    if spec.target not in known_tiny_specs():
        raise MiqaUsageError(f"--miqa-model {spec.safe!r}: unknown tiny checkpoint; known: {', '.join(known_tiny_specs())}")


def _load_transformers(spec: ModelSpec, settings: JudgeSettings) -> Judge:
    from .transformers_judge import TransformersJudge

    return TransformersJudge(spec.target, settings)


@dataclass(frozen=True)
class JudgeKind:
    """How to build (cheaply) and check (without loading weights) the judge of one spec kind."""

    load: Callable[[ModelSpec, JudgeSettings], Judge]
    check: Callable[[ModelSpec], None] = lambda spec: None


#: spec kind -> its judge (:data:`miqa_checks.judges.spec.KINDS`)
REGISTRY: dict[str, JudgeKind] = {
    "sim": JudgeKind(_load_sim, _check_sim),
    "openai": JudgeKind(_load_openai),
    "tiny": JudgeKind(_load_tiny, _check_tiny),
    "folder": JudgeKind(_load_transformers),
    "hub": JudgeKind(_load_transformers),
}


def load_judge(text: str, settings: JudgeSettings) -> Judge:
    """Construct the judge for a ``--miqa-model`` value (cheap: weights load on first ``score``)."""
    spec = parse_model_spec(text)
    return REGISTRY[spec.kind].load(spec, settings)


def validate_spec(text: str) -> None:
    """Check a model spec's form without loading anything heavy; MiqaUsageError names what is wrong."""
    spec = parse_model_spec(text)
    REGISTRY[spec.kind].check(spec)
