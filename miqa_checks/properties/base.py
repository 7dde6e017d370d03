"""A property is one object: its cells, the requests each cell needs per image, its tolerance with
the reason, its share of the model's alpha, and its rule.

The rule is a function of a :class:`~miqa_checks.properties.check.CellCheck` (the ``miqa``
fixture in a test) that reads the cell's scores and calls one ``assert_*`` helper. Cells and
requests are planned at collection from cheap facts (model specs, dataset names and modalities,
baseline given or not), so the engine can plan, deduplicate and batch every selected test's
requests before the first test runs, and ``-k`` computes only what it selects.

Light at import (no numpy): the plugin plans with it.

>>> @audit(cells=each_corruption(only=["hflip"]), requests=[CLEAN, CONDITION],
...        tolerance=Tolerance(5.0, why="a mirror image shows the same anatomy"))
... def test_flip_invariance(miqa):
...     miqa.assert_change_within(miqa.condition, miqa.clean, pct=miqa.tolerance)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from ..conditions import AUDIT_SETS, CORRUPTION_PROPERTIES, REGISTRY as CORRUPTIONS, corruptions_for
from ..requests import CLEAN, SEVERITIES, RequestSpec, condition_id

#: Request templates: ``"{condition}"`` is the cell's condition (``pixelation-3``); ``{corruption}``,
#: ``{severity}`` and ``{variant}`` are the cell's fields.
CONDITION = "{condition}"
VARIANT = "{variant}"
#: The alpha share of a user property that declares none (that of one attribute-pair cell group).
DEFAULT_SHARE = 0.05


@dataclass(frozen=True)
class Cell:
    """One property test cell (one row of ``matrix.csv``). ``variant``: attribute id, attribute
    group, paraphrase id, or any label a property's cells vary over."""

    property: str
    model: str  # the model spec as given
    dataset: str
    modality: str = ""
    corruption: str = ""
    severity: int = 0
    variant: str = ""

    @cached_property
    def label(self) -> str:
        """The model's label in test ids and reports (see :mod:`miqa_checks.judges.spec`)."""
        from ..judges.spec import model_label

        return model_label(self.model)

    @cached_property
    def condition(self) -> str:
        if self.corruption and self.severity:
            return condition_id(self.corruption, self.severity)
        return self.corruption or CLEAN

    @cached_property
    def param_id(self) -> str:
        """The pytest id: ``tiny-llava-samples_ct-pixelation-3``."""
        parts = [self.label, self.dataset, self.corruption, str(self.severity) if self.severity else "", self.variant]
        return "-".join(p for p in parts if p)

    @cached_property
    def test_id(self) -> str:
        return f"test_{self.property}[{self.param_id}]"

    def requests(self) -> list[RequestSpec]:
        """The requests (per image) this cell's statistic is computed from."""
        return REGISTRY[self.property].requests_for(self)

    def row(self) -> dict[str, Any]:
        """The identifying columns of this cell's ``matrix.csv`` row."""
        prop = REGISTRY.get(self.property)
        return {
            "test_id": self.test_id,
            "property": self.property,
            "model": self.label,
            "dataset": self.dataset,
            "modality": self.modality,
            "condition": self.condition if self.corruption else (self.variant or CLEAN),
            "corruption": self.corruption,
            "severity": self.severity or "",
            "attribute": self.variant if prop is not None and prop.variant_is_attribute else "",
        }


@dataclass(frozen=True)
class PlanContext:
    """What a property's cells may depend on: one (model, dataset) of the run, and the settings
    that choose its corruptions (``corruption_sets``, ``corruption_mapping``)."""

    model: str
    dataset: str
    modality: str
    with_baseline: bool
    corruption_sets: tuple[str, ...] = ()
    mapping: Mapping[str, Sequence[str]] | None = None

    @property
    def corruptions(self) -> tuple[str, ...]:
        """The corruptions planned for this dataset (see :func:`dataset_corruptions`)."""
        return dataset_corruptions(self.modality, self.corruption_sets, self.mapping)


def dataset_corruptions(
    modality: str, corruption_sets: Iterable[str] = (), mapping: Mapping[str, Iterable[str]] | None = None
) -> tuple[str, ...]:
    """The corruptions planned for a dataset: the protocol's seven and every user corruption that
    applies to its modality, then those of the extra ``corruption_sets`` (e.g. ``medical``) that its
    modality gets by default or by ``mapping`` (canonical modality -> ids of those sets)."""
    extra = tuple(s for s in corruption_sets if s not in AUDIT_SETS)
    base = corruptions_for(modality, AUDIT_SETS)
    return base + (corruptions_for(modality, extra, mapping) if extra else ())


#: ``cells(context, property) -> [{"corruption": ..., "severity": ..., "variant": ...}, ...]``
CellsFn = Callable[[PlanContext, "Property"], Iterable[Mapping[str, Any]]]
RequestTemplate = Union[str, RequestSpec]
RequestsFn = Callable[[Cell], Sequence[RequestSpec]]


@dataclass(frozen=True)
class Tolerance:
    """A tolerance: a profile key (so ``--miqa-profile`` and config set it) or a fixed value, and why.

    A value that is a list is per severity (index severity - 1); a table is per corruption (None
    for a corruption without an entry).
    """

    value: Any = None  # the value when no profile key gives one
    why: str = ""
    key: str | None = None

    def resolve(self, thresholds: Mapping[str, Any], cell: Cell) -> Any:
        return for_cell(thresholds.get(self.key, self.value) if self.key else self.value, cell)


def for_cell(value: Any, cell: Cell) -> Any:
    """A tolerance value for one cell: a list is indexed by severity, a table by corruption."""
    if isinstance(value, (list, tuple)) and cell.severity:
        return value[cell.severity - 1]
    if isinstance(value, Mapping):
        return value.get(cell.corruption)
    return value


def profile_key(key: str, why: str) -> Tolerance:
    """A tolerance read from the profile / config key ``key``."""
    return Tolerance(key=key, why=why)


Tolerances = Union[Tolerance, Mapping[str, Tolerance], None]


@dataclass(eq=False)
class Property:
    """One property. ``rule(miqa)`` decides a cell through one ``miqa.assert_*`` call."""

    name: str
    cells: CellsFn
    requests: Sequence[RequestTemplate] | RequestsFn
    rule: Callable[[Any], Any]
    tolerance: Tolerances = None
    share: float | None = None  # share of a dataset's alpha (families); None: the built-in table or DEFAULT_SHARE
    deterministic: bool = False  # spends no alpha (a judge meeting the rule can never fail it)
    varies: str = "-"  # what varies across the cells, for the docs and error messages
    needs_baseline: bool = False
    variant_is_attribute: bool = False  # the variant goes to matrix.csv's attribute column
    parse_failures_are_losses: bool = True  # False where parse failures are the statistic itself
    doc: str = ""
    _requests: dict[Cell, tuple[RequestSpec, ...]] = field(default_factory=dict, init=False, repr=False)

    def plan(self, context: PlanContext) -> list[Cell]:
        """This property's cells for one (model, dataset)."""
        if self.needs_baseline and not context.with_baseline:
            return []
        return [Cell(self.name, context.model, context.dataset, context.modality, **dict(axes))
                for axes in self.cells(context, self)]

    def requests_for(self, cell: Cell) -> list[RequestSpec]:
        """The cell's requests (worked out once per cell; a fresh list each call)."""
        known = self._requests.get(cell)
        if known is None:
            known = self._requests[cell] = tuple(self.requests(cell) if callable(self.requests)
                                                 else (_fill(t, cell) for t in self.requests))
        return list(known)

    def tolerance_for(self, thresholds: Mapping[str, Any], cell: Cell, override: Tolerances = None) -> Any:
        """The cell's tolerance value(s): a test's own (``override``), else the property's (config >
        profile > declared value). A number, or a dict for a property with several."""
        return _resolve(override if override is not None else self.tolerance, thresholds, cell)


def _resolve(t: Tolerances, thresholds: Mapping[str, Any], cell: Cell) -> Any:
    if t is None or isinstance(t, Tolerance):
        return t.resolve(thresholds, cell) if t is not None else None
    return {name: tol.resolve(thresholds, cell) for name, tol in t.items()}


def alpha_shares() -> dict[str, float]:
    """Each registered property's share of a dataset's alpha: declared, else the built-in table
    (:data:`miqa_checks.families.PROPERTY_SHARES`), else :data:`DEFAULT_SHARE`."""
    from ..families import PROPERTY_SHARES

    return {p.name: p.share if p.share is not None else PROPERTY_SHARES.get(p.name, DEFAULT_SHARE) for p in REGISTRY}


def _fill(template: RequestTemplate, cell: Cell) -> RequestSpec:
    fields = {"condition": cell.condition, "corruption": cell.corruption, "severity": cell.severity, "variant": cell.variant}
    if isinstance(template, str):
        return RequestSpec(template.format(**fields))
    return replace(template, condition=template.condition.format(**fields), prompt_id=template.prompt_id.format(**fields))


def request(condition: str = CLEAN, prompt: str = "base", *, repeat: int = 0, embed: bool = False) -> RequestSpec:
    """A request template: ``request("{condition}")``, ``request(prompt="{variant}")``, ``request(repeat=1)``."""
    return RequestSpec(condition, prompt, repeat, embed)


# --------------------------------------------------------------------------- cell axes


@dataclass(frozen=True)
class each_corruption:  # noqa: N801 - used like a function: cells=each_corruption()
    """Cells over the corruptions planned for the dataset (the protocol's seven, user corruptions,
    and the sets the profile's ``corruption_sets`` adds for its modality: the conditions registry's
    :func:`~miqa_checks.conditions.corruptions_for`), times their severities when ``severity``.

    A built-in corruption property plans only the corruptions meant for it (``Corruption.properties``).
    ``only``: these ids (of any registered set); ``sets``: the corruptions of these sets that apply
    to the modality, whatever the profile plans; ``full_series``: only corruptions with severities
    1..5 (statistics over the whole series).
    """

    severity: bool = True
    only: tuple[str, ...] | None = None
    sets: tuple[str, ...] | None = None
    full_series: bool = False

    def __post_init__(self) -> None:
        for name in ("only", "sets"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    def ids(self, context: PlanContext) -> tuple[str, ...]:
        if self.only is not None:
            return tuple(CORRUPTIONS[i].id for i in self.only)
        if self.sets is not None:
            return corruptions_for(context.modality, self.sets)
        return context.corruptions

    def __call__(self, context: PlanContext, prop: Property) -> list[dict[str, Any]]:
        ids = self.ids(context)
        out: list[dict[str, Any]] = []
        for cid in ids:
            entry = CORRUPTIONS[cid]
            if prop.name in CORRUPTION_PROPERTIES and prop.name not in entry.properties:
                continue
            if self.full_series and tuple(entry.severities) != SEVERITIES:
                continue
            out += [{"corruption": cid, "severity": s} for s in entry.severities] if self.severity else [{"corruption": cid}]
        return out


@dataclass(frozen=True)
class each:  # noqa: N801 - used like a function: cells=each(variant=[...])
    """Cells over the product of the given axes: ``each(variant=["a", "b"])``,
    ``each(corruption=["hflip"], severity=[1])``. Axes: corruption, severity, variant."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    def __init__(self, **axes: Iterable[Any]) -> None:
        unknown = set(axes) - {"corruption", "severity", "variant"}
        if unknown:
            raise ValueError(f"unknown cell axes {sorted(unknown)}; a cell varies over corruption, severity and variant")
        object.__setattr__(self, "axes", tuple((k, tuple(v)) for k, v in axes.items()))

    def __call__(self, context: PlanContext, prop: Property) -> list[dict[str, Any]]:
        names = [k for k, _ in self.axes]
        return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.axes))]


@dataclass(frozen=True)
class _Once:
    def __call__(self, context: PlanContext, prop: Property) -> list[dict[str, Any]]:
        return [{}]

    def __repr__(self) -> str:
        return "once"


#: One cell per (model, dataset).
once = _Once()


# --------------------------------------------------------------------------- registry


class PropertyRegistry:
    """Property name -> :class:`Property`, in registration order (built-ins first)."""

    def __init__(self) -> None:
        self._entries: dict[str, Property] = {}

    def add(self, prop: Property) -> Property:
        if not prop.name.isidentifier():
            raise ValueError(f"bad property name {prop.name!r}: letters, digits and '_' (it names the test)")
        old = self._entries.get(prop.name)
        if old is not None and not _same_origin(old.rule, prop.rule):
            raise ValueError(f"property {prop.name!r} is already registered (by {_origin(old.rule)})")
        self._entries[prop.name] = prop  # a module imported again (pytester, importlib.reload) replaces its own
        return prop

    def __getitem__(self, name: str) -> Property:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown property {name!r}; known: {', '.join(self._entries)}") from None

    def get(self, name: str) -> Property | None:
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _same_origin(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    return a is b or _origin(a) == _origin(b)


REGISTRY = PropertyRegistry()


def define(*, cells: CellsFn, requests: Sequence[RequestTemplate] | RequestsFn, tolerance: Tolerances = None,
           name: str | None = None, **options: Any) -> Callable[[Callable[[Any], Any]], Property]:
    """Register the decorated rule as a property (the library's way; :func:`audit` in a test)."""

    def register(rule: Callable[[Any], Any]) -> Property:
        prop = Property(name or rule.__name__.removeprefix("test_"), cells, requests, rule, tolerance,
                        doc=(rule.__doc__ or "").strip(), **options)
        return REGISTRY.add(prop)

    return register


def audit(prop: Property | None = None, /, *, cells: CellsFn | None = None,
          requests: Sequence[RequestTemplate] | RequestsFn | None = None, tolerance: Any = None, why: str = "",
          name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make the decorated function an audit test: one parametrised test per cell, ``miqa`` its data.

    ``@audit(cells=..., requests=..., tolerance=...)`` declares the property the test checks: named
    after the function (``test_flip_invariance`` -> ``flip_invariance``), registered at import, its
    rule the function's body. If a property of that name is registered already (a built-in), the
    test must declare the same cells and requests and then checks that property; its ``tolerance``
    is the test's own. ``@audit(prop)`` checks a property object as it is declared.
    ``tolerance``: a profile key (``"metadata_tolerance_pct"``: config and profiles set it), a
    number (``why=`` says why), a :class:`Tolerance`, or a dict of them for several.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        override = _as_tolerance(tolerance, why)
        if prop is not None:
            if cells is not None or requests is not None or options or name is not None:
                raise TypeError(f"@audit(prop) on {fn.__name__}: the property declares its cells and requests")
            target = prop
        else:
            if cells is None or requests is None:
                raise TypeError(f"@audit on {fn.__name__}: declare cells= and requests= (or pass a property)")
            prop_name = name or fn.__name__.removeprefix("test_")
            known = REGISTRY.get(prop_name)
            if known is None or _same_origin(known.rule, fn):
                target = define(cells=cells, requests=requests, tolerance=override, name=prop_name, **options)(fn)
                override = None
            elif (known.cells, _templates(known.requests)) != (cells, _templates(requests)) or options:
                raise TypeError(
                    f"{fn.__name__} declares other cells or requests than the registered property {prop_name!r} "
                    f"({_origin(known.rule)}): rename the test to declare a new property")
            else:
                target = known
        fn.miqa_property = target  # type: ignore[attr-defined]
        fn.miqa_tolerance = override  # type: ignore[attr-defined]
        return fn

    return decorate


def _templates(requests: Sequence[RequestTemplate] | RequestsFn) -> Any:
    return requests if callable(requests) else [RequestSpec(t) if isinstance(t, str) else t for t in requests]


def _as_tolerance(value: Any, why: str) -> Tolerances:
    if value is None or isinstance(value, Tolerance):
        return value
    if isinstance(value, Mapping):
        return {k: _as_tolerance(v, why) for k, v in value.items()}  # type: ignore[misc]
    if isinstance(value, str):
        return Tolerance(key=value, why=why)
    return Tolerance(value=value, why=why)


def plan_cells(models: Iterable[str], datasets: Iterable[tuple[str, str]], *, with_baseline: bool,
               corruption_sets: Iterable[str] = (), mapping: Mapping[str, Iterable[str]] | None = None,
               properties: Iterable[str] | None = None) -> list[Cell]:
    """Every cell of the matrix, in a stable order (model, dataset, property, cell).

    datasets: (dataset id, modality text) pairs; ``corruption_sets`` / ``mapping``: the profile's
    extra corruption sets and modality mapping (:func:`dataset_corruptions`); properties: names to
    plan (all registered when None).
    """
    props = list(REGISTRY) if properties is None else [REGISTRY[p] for p in properties]
    datasets = list(datasets)
    sets = tuple(corruption_sets)
    frozen = {k: tuple(v) for k, v in mapping.items()} if mapping else None
    cells: list[Cell] = []
    for model in models:
        for dataset, modality in datasets:
            context = PlanContext(model, dataset, modality, with_baseline, sets, frozen)
            for prop in props:
                cells += prop.plan(context)
    return cells
