"""Judge adapters, chosen by the ``--miqa-model`` spec.

``tiny-<arch>``       offline tiny checkpoint built on first use (transformers path)
``openai:<url>#<m>``  OpenAI-compatible server
``sim-robust``, ``sim-paper``, ``sim:<knob>=<value>,...``  simulated judges with planted behaviour
anything else         Hugging Face id or local checkpoint folder (transformers path)
"""

from __future__ import annotations

from .base import SCORING_METHODS, Judge, JudgeSettings

__all__ = ["Judge", "JudgeSettings", "SCORING_METHODS", "load_judge", "is_simulated"]


def is_simulated(spec: str) -> bool:
    """True for ``sim-*`` and ``sim:*`` specs (no model weights involved)."""
    return spec.startswith("sim-") or spec.startswith("sim:")


def load_judge(spec: str, settings: JudgeSettings) -> Judge:
    """Construct the judge for ``spec`` (cheap: weights load on first ``score``)."""
    if is_simulated(spec):
        from .simulated import SimulatedJudge

        return SimulatedJudge(spec, settings)
    if spec.startswith("openai:"):
        from .openai_judge import OpenAIJudge

        return OpenAIJudge(spec, settings)
    if spec.startswith("tiny-"):
        from .tiny import tiny_checkpoint
        from .transformers_judge import TransformersJudge

        return TransformersJudge(spec, settings, checkpoint_factory=lambda: tiny_checkpoint(spec, settings.home))
    from .transformers_judge import TransformersJudge

    return TransformersJudge(spec, settings)


def validate_spec(spec: str) -> None:
    """Check a model spec's form without loading anything heavy; MiqaUsageError names what is wrong."""
    from ..errors import MiqaUsageError

    if is_simulated(spec):
        from .simulated import SimulatedJudge

        SimulatedJudge(spec, JudgeSettings())  # parses the knobs
    elif spec.startswith("openai:"):
        url, sep, model = spec[len("openai:") :].rpartition("#")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise MiqaUsageError(f"--miqa-model {spec!r}: expected openai:<base_url>#<model>, e.g. openai:http://127.0.0.1:8000/v1#my-model")
    elif spec.startswith("tiny-"):
        from .tiny import known_tiny_specs

        if spec not in known_tiny_specs():
            raise MiqaUsageError(f"--miqa-model {spec!r}: unknown tiny checkpoint; known: {', '.join(known_tiny_specs())}")
