"""A cell's data and its assertion helpers: what a rule (a test body) sees as ``miqa``.

``lookup(RequestSpec, image_id) -> ScoreResult | None`` hides where results come from (the engine
and its store in a run, a synthetic table in the self-tests). Baselines come as
``{(dataset, image_id, condition, prompt_id): score}``.

Each ``assert_*`` computes a :class:`~miqa_checks.properties.verdicts.Verdict` with the audit's
statistics (paired change with its interval, equivalence decision, inconclusive with the n that
would decide) and hands it to :meth:`CellCheck.decide`, which applies the loss rule (a cell that
lost more than ``max_lost_share`` of its images is an error) and reports it: in a test, the matrix
row, the JUnit properties and the outcome (fail, skip); in :func:`evaluate_cell`, the return value.

Shapes: scores ``(n,)`` paired by image in ``image_ids`` order; series ``(k, n)``; embeddings ``(n, D)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from .. import stats
from ..records import ScoreResult
from ..requests import CLEAN, SEVERITIES, RequestSpec
from ..stats import ERROR, NOT_APPLICABLE
from . import verdicts as V
from .base import REGISTRY, Cell

Lookup = Callable[[RequestSpec, str], "ScoreResult | None"]
BaselineScores = Mapping[tuple[str, str, str, str], float]
Series = Union[RequestSpec, str, np.ndarray, Sequence[float]]


@dataclass
class CellOutcome:
    """A verdict plus what the reports plot beside it (displacement points for embedding cells)."""

    verdict: V.Verdict
    displacements: list[dict[str, Any]] = field(default_factory=list)


class Decided(Exception):
    """Raised after a verdict that ends the rule (an error before any statistic)."""


def error_verdict(reason: str, n: int = 0) -> V.Verdict:
    """A cell that could not be computed (no images, no baseline, model not loadable)."""
    nan = float("nan")
    return V.Verdict(ERROR, nan, nan, nan, nan, "", n, reason)


def not_applicable_verdict(reason: str) -> V.Verdict:
    """A cell the judge cannot serve (e.g. embeddings from a served model): skipped with ``reason``."""
    nan = float("nan")
    return V.Verdict(NOT_APPLICABLE, nan, nan, nan, nan, "", 0, reason)


def lost_images(cell: Cell, image_ids: Sequence[str], lookup: Lookup) -> Counter[str]:
    """Images of the cell with at least one request lost, by the stage of the first loss:
    ``missing``, ``corruption``, ``score`` or ``parse`` (parse failures are not losses for a
    property whose statistic they are, e.g. ``output_validity``), or ``not_applicable`` (not a
    loss: the condition does not apply to that image)."""
    return _lost(cell, [[lookup(spec, i) for i in image_ids] for spec in cell.requests()])


def _lost(cell: Cell, columns: Sequence[Sequence[ScoreResult | None]]) -> Counter[str]:
    """:func:`lost_images` from each request's results per image (``cell.requests()`` order)."""
    count_parse = REGISTRY[cell.property].parse_failures_are_losses
    stages: Counter[str] = Counter()
    for image in zip(*columns):
        for result in image:
            stage = "missing" if result is None else result.loss_stage(count_parse=count_parse)
            if stage is not None:
                stages[stage] += 1
                break
    return stages


def lost_verdict(verdict: V.Verdict, lost: Counter[str], n_images: int, max_share: float) -> V.Verdict:
    """``verdict`` turned into an error when more than ``max_share`` of the images were lost."""
    share = sum(lost.values()) / n_images
    if share <= max_share:
        return verdict
    why = ", ".join(f"{k} {stage}" for stage, k in lost.most_common())
    reason = (
        f"{sum(lost.values())} of {n_images} images ({share:.0%}) lost to errors ({why}), above "
        f"max_lost_share={max_share:.0%}: the result would rest on the images that happened to work. "
        f"Reasons in errors.csv. {verdict.reason}"
    )
    return replace(verdict, outcome=ERROR, reason=reason)


class CellCheck:
    """One cell's data (scores, embeddings, baseline) and the assertion helpers that decide it.

    ``tolerance``: the cell's tolerance (a number, or a dict for a property with several);
    ``clean`` / ``condition``: the requests of the clean image and of the cell's condition.
    ``on_decide(outcome)`` reports the final verdict (the plugin: matrix row, JUnit, outcome).
    ``prechecks``: called before the first read; one that returns a verdict decides the cell.
    ``groups``: the group of each image (same order); under the profile's ``unit = "group"`` the
    statistics are cluster-robust over groups and ``n`` counts groups.
    """

    def __init__(self, cell: Cell, image_ids: Sequence[str], lookup: Lookup, thresholds: Mapping[str, Any], *,
                 family_size: float, seed: int, baseline: BaselineScores | None = None, tolerance: Any = None,
                 groups: Sequence[str] | None = None,
                 on_decide: Callable[[CellOutcome], None] | None = None,
                 prechecks: Sequence[Callable[[], "V.Verdict | None"]] = (), context: Mapping[str, Any] | None = None):
        self.cell = cell
        self.property = REGISTRY[cell.property]
        self.image_ids = list(image_ids)
        self.lookup = lookup
        self.thresholds = thresholds
        self.family_size = family_size
        self.seed = seed
        self.baseline = baseline
        self.tolerance = tolerance
        by_group = groups is not None and thresholds.get("unit", "group") == "group"
        #: The unit of replication of each image (its group, or itself under ``unit = "image"``).
        self.groups = list(groups) if by_group else list(self.image_ids)
        self.clean = RequestSpec(CLEAN)
        self.condition = RequestSpec(cell.condition)
        self.context = dict(context or {})  # e.g. the engine, for judge() and images()
        self.outcome: CellOutcome | None = None
        self._on_decide = on_decide
        self._prechecks = list(prechecks)
        self._checked = False
        self._lost: Counter[str] = Counter()
        self._applicable = len(self.image_ids)
        self._served: dict[RequestSpec, list[ScoreResult | None]] = {}

    # ------------------------------------------------------------------ data

    @property
    def requests(self) -> list[RequestSpec]:
        """The requests the property declared for this cell (all that the engine computed)."""
        return self.cell.requests()

    def _spec(self, request: RequestSpec | str) -> RequestSpec:
        self._precheck()
        spec = RequestSpec(request) if isinstance(request, str) else request
        if spec not in self.requests:
            declared = ", ".join(f"{s.condition}/{s.prompt_id}" for s in self.requests)
            raise LookupError(f"{spec} is not among the requests property {self.cell.property!r} declares for "
                              f"this cell ({declared}): declare it, so that it is computed before the tests run")
        return spec

    def _column(self, spec: RequestSpec) -> list[ScoreResult | None]:
        """One request's results per image, asked of ``lookup`` once per cell."""
        column = self._served.get(spec)
        if column is None:
            column = self._served[spec] = [self.lookup(spec, i) for i in self.image_ids]
        return column

    def results(self, request: RequestSpec | str) -> list[ScoreResult | None]:
        """The stored results of one request, per image (None where missing)."""
        return list(self._column(self._spec(request)))

    def scores(self, request: RequestSpec | str) -> np.ndarray:
        """Scores ``(n,)`` of one request, NaN where missing or failed."""
        column = self._column(self._spec(request))
        return np.array([np.nan if r is None else r.score for r in column], dtype=float)

    def series(self, requests: Sequence[RequestSpec | str]) -> np.ndarray:
        """Scores ``(k, n)`` of k requests."""
        return np.stack([self.scores(r) for r in requests])

    def embeddings(self, request: RequestSpec | str) -> np.ndarray | None:
        """Embeddings ``(n, D)``; None when any is missing (embedding statistics need them all)."""
        rows = []
        for result in self.results(request):
            if result is None or result.embedding is None:
                return None
            rows.append(result.embedding)
        return np.stack(rows).astype(np.float64)

    def baseline_scores(self, request: RequestSpec | str) -> np.ndarray:
        """``--miqa-baseline`` scores ``(n,)`` of one request, NaN where the baseline has none."""
        spec = self._spec(request)
        if self.baseline is None:
            self.decide(error_verdict("no --miqa-baseline given"))
            raise Decided
        key = self.cell.dataset
        return np.array([self.baseline.get((key, i, spec.condition, spec.prompt_id), np.nan) for i in self.image_ids],
                        dtype=float)

    def judge(self) -> Any:
        """The cell's judge (loaded once per process); only inside a run."""
        return self.context["engine"].judge(self.cell.model)

    def images(self) -> list[Any]:
        """The cell's images (:class:`~miqa_checks.records.ImageRecord`, ``image_ids`` order); only inside a run."""
        dataset = self.context["engine"].datasets()[self.cell.dataset]
        by_id = {r.image_id: r for r in dataset.records}
        return [by_id[i] for i in self.image_ids]

    @property
    def common(self) -> dict[str, Any]:
        """The statistics' keyword arguments for this cell (alpha, family size, min_images, seed)."""
        t = self.thresholds
        return dict(alpha=t["alpha"], family_size=self.family_size, min_images=t["min_images"], seed=self.seed,
                    resamples=t["bootstrap_resamples"], groups=np.asarray(self.groups))

    def _array(self, x: Series) -> np.ndarray:
        if isinstance(x, (RequestSpec, str)):
            return self.scores(x)
        return np.asarray(x, dtype=float)

    # ------------------------------------------------------------------ deciding

    def _precheck(self) -> None:
        """Once, before the first read: the run's prechecks (model loaded, embeddings served), then images."""
        if self._checked:
            return
        self._checked = True
        checks = [*self._prechecks, self._has_images, self._applies]
        for check in checks:
            verdict = check()
            if verdict is not None:
                self.decide(verdict)
                raise Decided

    def _has_images(self) -> V.Verdict | None:
        return None if self.image_ids else error_verdict(f"dataset {self.cell.dataset} has no readable image")

    def _applies(self) -> V.Verdict | None:
        """Counts the lost images; not applicable when the condition applies to none of them."""
        self._lost = _lost(self.cell, [self._column(spec) for spec in self.cell.requests()])
        self._applicable -= self._lost.pop("not_applicable", 0)
        if self._applicable:
            return None
        return not_applicable_verdict(f"{self.cell.corruption or self.cell.condition} does not apply to any image "
                                      f"of {self.cell.dataset}")

    def decide(self, verdict: V.Verdict, displacements: Sequence[Mapping[str, Any]] = ()) -> V.Verdict:
        """Record ``verdict`` as the cell's (once); a statistic's verdict goes through the loss rule."""
        if self.outcome is not None:
            first = self.outcome.verdict.outcome
            self.outcome = None
            self.decide(error_verdict(f"the cell was already decided ({first}): a test makes one assert_* call per cell"))
            raise Decided
        self._precheck()
        if verdict.outcome not in (ERROR, NOT_APPLICABLE):
            verdict = lost_verdict(verdict, self._lost, self._applicable, self.thresholds["max_lost_share"])
        self.outcome = CellOutcome(verdict, [dict(d) for d in displacements])
        if self._on_decide is not None:
            self._on_decide(self.outcome)
        return verdict

    # ------------------------------------------------------------------ assertion helpers

    def assert_change_within(self, cond: Series, ref: Series, *, pct: float) -> V.Verdict:
        """Two-sided equivalence: the mean of ``cond`` within +-``pct`` % of the mean of ``ref``."""
        r, c = self._array(ref), self._array(cond)
        return self.decide(V.relative_change(r, c, tol_pct=pct, **self.common))

    def assert_no_rise(self, cond: Series, ref: Series, *, pct: float) -> V.Verdict:
        """One-sided: the mean of ``cond`` at most ``pct`` % above the mean of ``ref``."""
        r, c = self._array(ref), self._array(cond)
        return self.decide(V.no_inflation(r, c, tol_pct=pct, **self.common))

    def assert_falls_with_severity(self, *, trend_pct: float, fall_pct: float | None) -> V.Verdict:
        """The score does not rise by more than ``trend_pct`` %/step over the cell's severity series
        (clean + severities 1..5) and, when ``fall_pct`` is given, falls by at least it at severity 5."""
        ref, *levels = self.requests
        return self.decide(V.severity_response(self.scores(ref), self.series(levels), trend_tol_pct=trend_pct,
                                               fall_required_pct=fall_pct, **self.common))

    def assert_embedding_stable(self, *, tolerance: float) -> V.Verdict:
        """Relative embedding displacement under ``tolerance`` at severity 1 and growing with severity."""
        clean_spec, *level_specs = self.requests
        clean = self.embeddings(clean_spec)
        levels = [self.embeddings(s) for s in level_specs]
        if clean is None or any(level is None for level in levels):
            return self.decide(error_verdict("embeddings missing (the judge returned none for some images)",
                                             len(self.image_ids)))
        by_severity = np.stack(levels)  # (5, n, D)
        verdict = V.embedding_consistency(clean, by_severity, tolerance=tolerance, **self.common)
        displacement = V.relative_displacements(clean, by_severity)  # (5,)
        ref = self.scores(clean_spec)
        points = []
        for severity, spec in zip(SEVERITIES, level_specs):
            (r, c), _ = stats.drop_nan_pairs(ref, self.scores(spec))
            change = stats.paired_delta(r, c)[0] if r.size else float("nan")
            points.append({"model": self.cell.label, "dataset": self.cell.dataset, "corruption": self.cell.corruption,
                           "severity": severity, "displacement": float(displacement[severity - 1]),
                           "score_change_pct": float(change)})
        return self.decide(verdict, points)

    def assert_repeatable(self, first: Series, second: Series, *, tolerance: float) -> V.Verdict:
        """Every image scores the same twice, within ``tolerance`` points."""
        return self.decide(V.repeatability(self._array(first), self._array(second), tolerance=tolerance, **self.common))

    def assert_valid_outputs(self, *, max_parse_failure_rate: float, max_out_of_range_rate: float) -> V.Verdict:
        """Parse failures and out-of-range scores over every declared request stay under the rates
        (a failure of the judge itself is an error record, not an invalid output)."""
        parse_ok, scores, request_groups = [], [], []
        for spec in self.requests:
            for result, group in zip(self.results(spec), self.groups):
                if result is None or result.error is not None:
                    continue
                parse_ok.append(result.parse_ok)
                scores.append(result.score)
                request_groups.append(group)  # one image's requests are not independent trials
        return self.decide(V.output_validity(np.array(parse_ok, dtype=bool), np.array(scores, dtype=float),
                                             max_parse_failure_rate=max_parse_failure_rate,
                                             max_out_of_range_rate=max_out_of_range_rate,
                                             **{**self.common, "groups": np.asarray(request_groups)}))

    def assert_agrees_with_baseline(self, *, min_r: float) -> V.Verdict:
        """Per-image scores (each image's mean over the declared requests) correlate with the
        baseline's at least ``min_r``."""
        new = _image_means(self.series(self.requests))
        old = _image_means(np.stack([self.baseline_scores(s) for s in self.requests]))
        return self.decide(V.baseline_agreement(new, old, min_r=min_r, **self.common))

    def assert_noninferior_to_baseline(self, *, margin_pct: float) -> V.Verdict:
        """Over the cell's series (reference first), no less stable than the baseline by more than ``margin_pct``."""
        ref, *conds = self.requests
        old_ref = self.baseline_scores(ref)
        old_cond = np.stack([self.baseline_scores(s) for s in conds])
        return self.decide(V.baseline_noninferiority(self.scores(ref), self.series(conds), old_ref, old_cond,
                                                     margin_pct=margin_pct, **self.common))


def _image_means(scores: np.ndarray) -> np.ndarray:
    """(k, n) -> (n,) mean over the k conditions of each image, NaN-skipping; NaN if none."""
    valid = ~np.isnan(scores)
    count = valid.sum(axis=0)
    return np.where(count > 0, np.where(valid, scores, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)


def run_rule(check: CellCheck, rule: Callable[[CellCheck], Any]) -> CellOutcome:
    """Run a property's rule on ``check``; a rule that decides nothing is an error."""
    try:
        rule(check)
    except Decided:
        pass
    if check.outcome is None:
        check.decide(error_verdict(f"{check.cell.property}: the rule made no decision (it must call one miqa.assert_* helper)"))
    assert check.outcome is not None
    return check.outcome
