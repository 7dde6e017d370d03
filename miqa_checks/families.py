"""Fixed alpha weights per cell: a weighted Bonferroni over each model's planned matrix.

A cell fails when its one-sided p-value is below its own alpha, ``alpha_c = alpha * w_c``, and
the weights of one model's cells sum to 1, so the chance that a model meeting every tolerance
fails anywhere stays <= alpha (Bonferroni holds under any dependence between cells). The
weights come from the *plan* only (the model's datasets, whether a baseline is given), never
from which cells ``-k`` selected, how ``-n`` split them or what other cells returned, so a spot
check gives the verdict of the full audit.

How the weight is split (docs/STATISTICS.md, "Families"):

1. equally over the model's datasets (the family is the model: one CI gate per model);
2. within a dataset, by a fixed share per property (:data:`PROPERTY_SHARES`), renormalised
   over the properties the plan holds; deterministic properties (repeatability) need none;
3. equally over that property's cells in the dataset.

Properties whose defects show in a single cell (an attribute bias moves one metadata cell per
dataset) get a larger share per cell than those whose defects move many correlated cells at
once (an inflating judge moves all 35 no-inflation cells of a dataset).

Pure Python; ``cells`` are :class:`miqa_checks.matrix.Cell` (anything with ``model``,
``dataset`` and ``property``).
"""

from __future__ import annotations

from typing import AbstractSet, Hashable, Iterable, Mapping, Protocol


class _CellLike(Protocol):
    model: str
    dataset: str
    property: str


#: Share of a dataset's alpha per property, before renormalising over the planned properties.
PROPERTY_SHARES: Mapping[str, float] = {
    "corruption_stability": 0.25,
    "no_inflation": 0.25,
    "metadata_invariance": 0.25,
    "severity_response": 0.08,
    "metadata_pair_invariance": 0.05,
    "embedding_consistency": 0.04,
    "paraphrase_invariance": 0.04,
    "output_validity": 0.04,
    "baseline_noninferiority": 0.10,
    "baseline_agreement": 0.05,
}

#: Deterministic properties: a judge that meets the rule can never fail them, so they spend no alpha.
DETERMINISTIC = frozenset({"repeatability"})


def family_weights(cells: Iterable[_CellLike], *, shares: Mapping[str, float] = PROPERTY_SHARES,
                   deterministic: AbstractSet[str] = DETERMINISTIC) -> dict[Hashable, float]:
    """Weight w_c of every statistical cell (its share of its model's alpha); sums to 1 per model.

    ``shares`` / ``deterministic``: per property (the run passes every registered property's, user
    ones included). Deterministic cells get weight 0. Raises KeyError for a property with no share.
    """
    cells = list(cells)
    datasets: dict[str, set[str]] = {}
    props: dict[tuple[str, str], dict[str, int]] = {}
    for c in cells:
        if c.property in deterministic:
            continue
        if c.property not in shares:
            raise KeyError(f"property {c.property!r} has no alpha share (families.PROPERTY_SHARES or its declared share)")
        datasets.setdefault(c.model, set()).add(c.dataset)
        count = props.setdefault((c.model, c.dataset), {})
        count[c.property] = count.get(c.property, 0) + 1
    weights: dict[Hashable, float] = {}
    for c in cells:
        if c.property in deterministic:
            weights[c] = 0.0
            continue
        count = props[(c.model, c.dataset)]
        total = sum(shares[p] for p in count)
        weights[c] = shares[c.property] / total / count[c.property] / len(datasets[c.model])
    return weights


def effective_family_sizes(cells: Iterable[_CellLike], **tables: object) -> dict[Hashable, float]:
    """Per cell ``1 / w_c`` = ``alpha / alpha_c``: what the property functions take as
    ``family_size`` (a Bonferroni factor). Deterministic cells get 1.0 (they do not use it).
    ``tables``: ``shares`` / ``deterministic`` as for :func:`family_weights`."""
    return {c: (1.0 / w if w > 0 else 1.0) for c, w in family_weights(cells, **tables).items()}  # type: ignore[arg-type]
