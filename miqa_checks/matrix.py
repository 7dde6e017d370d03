"""The audit matrix: which property cells exist, and which requests each one needs.

A cell is one parametrised test (one row of ``matrix.csv``). Cells are planned at collection
time from cheap facts (model specs, dataset names, profile, baseline given or not), so the
same matrix comes out in every process, with or without ``-k`` or ``-n``. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .conditions import REGISTRY, audit_ids, corruptions_for
from .prompts import ATTRIBUTE_PAIRS, ATTRIBUTES, BASE_PROMPT_ID, PARAPHRASES

SEVERITIES = (1, 2, 3, 4, 5)
CLEAN = "clean"

#: Property -> what varies across its cells.
PROPERTIES: dict[str, str] = {
    "corruption_stability": "corruption x severity",
    "severity_response": "corruption",
    "no_inflation": "corruption x severity",
    "metadata_invariance": "attribute",
    "metadata_pair_invariance": "attribute group",
    "embedding_consistency": "corruption",
    "paraphrase_invariance": "paraphrase",
    "repeatability": "-",
    "output_validity": "-",
    "baseline_agreement": "- (needs --miqa-baseline)",
    "baseline_noninferiority": "corruption (needs --miqa-baseline)",
}
BASELINE_PROPERTIES = ("baseline_agreement", "baseline_noninferiority")


def condition_id(corruption: str, severity: int) -> str:
    """``pixelation``, 3 -> ``pixelation-3``."""
    return f"{corruption}-{severity}"


def model_label(spec: str) -> str:
    """A short, path-free, credential-free label for a model spec, used in test ids and reports.

    ``org/name`` -> ``org_name``; ``/abs/path/ckpt`` -> ``ckpt``; ``openai:http://h:1/v1#m`` -> ``openai-m``;
    ``sim:pixelation=-20,seed=2`` -> ``sim-<hash8>``; ``NAME=SPEC`` -> ``NAME``; ``tiny-llava`` stays.
    See :mod:`miqa_checks.judges.spec` (the one parser of model specs).
    """
    from .judges.spec import model_label as label

    return label(spec)


@dataclass(frozen=True)
class RequestSpec:
    """One request per image of the cell's dataset: condition x prompt (x repeat)."""

    condition: str
    prompt_id: str = BASE_PROMPT_ID
    repeat: int = 0
    embed: bool = False


@dataclass(frozen=True)
class Cell:
    """One property test cell. ``variant``: attribute id, attribute group or paraphrase id."""

    property: str
    model: str  # the model spec as given
    dataset: str
    modality: str = ""
    corruption: str = ""
    severity: int = 0
    variant: str = ""

    @property
    def label(self) -> str:
        return model_label(self.model)

    @property
    def condition(self) -> str:
        if self.corruption and self.severity:
            return condition_id(self.corruption, self.severity)
        return self.corruption or CLEAN

    @property
    def param_id(self) -> str:
        """The pytest id: ``tiny-llava-samples_ct-pixelation-3``."""
        parts = [self.label, self.dataset, self.corruption, str(self.severity) if self.severity else "", self.variant]
        return "-".join(p for p in parts if p)

    @property
    def test_id(self) -> str:
        return f"test_{self.property}[{self.param_id}]"

    def requests(self) -> list[RequestSpec]:
        """The requests (per image) this cell's statistic is computed from."""
        base = RequestSpec(CLEAN)
        series = lambda embed=False: [  # noqa: E731 - clean + the five severities of one corruption
            RequestSpec(CLEAN, embed=embed),
            *(RequestSpec(condition_id(self.corruption, s), embed=embed) for s in SEVERITIES),
        ]
        prop = self.property
        if prop in ("corruption_stability", "no_inflation"):
            return [base, RequestSpec(self.condition)]
        if prop in ("severity_response", "baseline_noninferiority"):
            return series()
        if prop == "embedding_consistency":
            return series(embed=True)
        if prop in ("metadata_invariance", "paraphrase_invariance"):
            return [base, RequestSpec(CLEAN, self.variant)]
        if prop == "metadata_pair_invariance":
            first, second = ATTRIBUTE_PAIRS[self.variant]
            return [RequestSpec(CLEAN, first), RequestSpec(CLEAN, second)]
        if prop == "repeatability":
            return [base, RequestSpec(CLEAN, repeat=1)]
        if prop in ("output_validity", "baseline_agreement"):
            return [base, *(RequestSpec(condition_id(c, s)) for c in audit_ids() for s in SEVERITIES)]
        raise KeyError(f"unknown property {prop!r}")

    def row(self) -> dict[str, Any]:
        """The identifying columns of this cell's ``matrix.csv`` row."""
        attribute = self.variant if self.property.startswith(("metadata", "paraphrase")) else ""
        return {
            "test_id": self.test_id,
            "property": self.property,
            "model": self.label,
            "dataset": self.dataset,
            "modality": self.modality,
            "condition": self.condition if self.corruption else (self.variant or CLEAN),
            "corruption": self.corruption,
            "severity": self.severity or "",
            "attribute": attribute,
        }


def dataset_corruptions(
    modality: str, corruption_sets: Iterable[str] = (), mapping: Mapping[str, Iterable[str]] | None = None
) -> tuple[str, ...]:
    """The corruptions planned for a dataset: the protocol's seven and every user corruption that
    applies to its modality, then those of the extra ``corruption_sets`` (e.g. ``medical``) that its
    modality gets by default or by ``mapping`` (canonical modality -> ids of those sets)."""
    extra = tuple(s for s in corruption_sets if s not in ("imagenet_c", "user"))
    base = corruptions_for(modality, ("imagenet_c", "user"))
    return base + (corruptions_for(modality, extra, mapping) if extra else ())


def plan_cells(
    models: Iterable[str],
    datasets: Iterable[tuple[str, str]],
    *,
    with_baseline: bool,
    corruption_sets: Iterable[str] = (),
    mapping: Mapping[str, Iterable[str]] | None = None,
) -> list[Cell]:
    """Every cell of the full matrix, in a stable order (model, dataset, property, condition).

    datasets: (dataset id, modality text) pairs. Each corruption gets the corruption properties
    its registry entry declares (``Corruption.properties``).
    """
    cells: list[Cell] = []
    datasets = list(datasets)
    sets = tuple(corruption_sets)
    for model in models:
        for dataset, modality in datasets:
            corruptions = dataset_corruptions(modality, sets, mapping)

            def add(prop: str, **kw: Any) -> None:
                cells.append(Cell(prop, model, dataset, modality, **kw))

            def applying(prop: str) -> list[str]:
                return [c for c in corruptions if prop in REGISTRY[c].properties]

            for c in applying("corruption_stability"):
                for s in SEVERITIES:
                    add("corruption_stability", corruption=c, severity=s)
            for c in applying("severity_response"):
                add("severity_response", corruption=c)
            for c in applying("no_inflation"):
                for s in SEVERITIES:
                    add("no_inflation", corruption=c, severity=s)
            for attribute in ATTRIBUTES:
                add("metadata_invariance", variant=attribute)
            for group in ATTRIBUTE_PAIRS:
                add("metadata_pair_invariance", variant=group)
            for c in applying("embedding_consistency"):
                add("embedding_consistency", corruption=c)
            for paraphrase in PARAPHRASES:
                add("paraphrase_invariance", variant=paraphrase)
            add("repeatability")
            add("output_validity")
            if with_baseline:
                add("baseline_agreement")
                for c in audit_ids():
                    add("baseline_noninferiority", corruption=c)
    return cells
