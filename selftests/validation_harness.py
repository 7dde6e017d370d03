"""Run the full default audit matrix on simulated judges, many seeds, without pytest in the loop.

Two image sets, both real pixels corrupted once by the real corruption engine:

- :func:`validation_images`: 64 crops per dataset cut from the embedded samples (crop corners
  drawn from a fixed seed), 5 datasets: a MediMeta-C-like run of 64 images per dataset;
- :func:`sample_images`: the embedded samples as a default run loads them (6 datasets,
  n = 5..37), with each image's group (source image, clip or series).

The matrix is the one the profile plans (its ``corruption_sets``: the default profile adds the
medical set per modality, 1068 cells on the samples). A condition that does not apply to an
image (saturate on a grey image) gets the engine's failed "not applicable" result.

Each seeded run scores every request with a fresh ``SimulatedJudge`` and evaluates every cell
through the same ``evaluate_cell`` the audit uses, with the same per-cell alpha weights
(:func:`miqa_checks.families.effective_family_sizes`) as a real run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from miqa_checks.conditions import apply, parse_condition
from miqa_checks.data import load_all
from miqa_checks.evaluate import evaluate_cell
from miqa_checks.judges import JudgeSettings
from miqa_checks.judges.simulated import SimulatedJudge
from miqa_checks.families import effective_family_sizes
from miqa_checks.matrix import CLEAN, Cell, RequestSpec, plan_cells
from miqa_checks.profiles import DEFAULT
from miqa_checks.prompts import build_prompt
from miqa_checks.records import CONDITION_FAILED, RequestMeta, ScoreRequest, ScoreResult

DATASETS = ("samples_ct", "samples_mr", "samples_us", "samples_fundus", "samples_microscopy")
CROP = 96


@dataclass(frozen=True)
class Image:
    dataset: str
    modality: str
    image_id: str
    pixels: np.ndarray
    group: str = ""


@lru_cache(maxsize=4)
def validation_images(n_images: int = 64) -> tuple[Image, ...]:
    """``n_images`` real crops (CROP x CROP) per dataset, cut from the embedded samples."""
    rng = np.random.default_rng(20260101)
    out = []
    for dataset in load_all(["samples"], max_images=None, seed=0):
        if dataset.name not in DATASETS:
            continue
        sources = [r.image for r in dataset.records if min(r.image.shape[:2]) >= CROP]
        for i in range(n_images):
            src = sources[i % len(sources)]
            y = rng.integers(0, src.shape[0] - CROP + 1)
            x = rng.integers(0, src.shape[1] - CROP + 1)
            out.append(Image(dataset.name, dataset.modality, f"crop{i:03d}", np.ascontiguousarray(src[y : y + CROP, x : x + CROP])))
    return tuple(out)


@lru_cache(maxsize=1)
def sample_images() -> tuple[Image, ...]:
    """The embedded samples as a default run loads them (every image, sorted by id), with groups."""
    out = []
    for dataset in load_all(["samples"], max_images=None, seed=0):
        for r in sorted(dataset.records, key=lambda r: r.image_id):
            out.append(Image(dataset.name, dataset.modality, r.image_id, r.image, getattr(r, "group", "") or r.image_id))
    return tuple(out)


class Harness:
    """Scores the union of every cell's requests once per (spec, seed) and evaluates each cell.

    images: the image set (default: 64 crops per dataset); grouped: pass each image's group to
    ``evaluate_cell``, which uses it (cluster-robust over groups) when the profile's ``unit`` is
    ``group``; without it every image is its own unit.
    """

    def __init__(self, n_images: int = 64, thresholds: dict | None = None, images: tuple[Image, ...] | None = None,
                 grouped: bool = False) -> None:
        self.thresholds = dict(thresholds or DEFAULT)
        self.images = validation_images(n_images) if images is None else images
        self.grouped = grouped
        by_dataset: dict[str, list[Image]] = {}
        for image in self.images:
            by_dataset.setdefault(image.dataset, []).append(image)
        self.image_ids = {d: [i.image_id for i in imgs] for d, imgs in by_dataset.items()}
        self.groups = {d: [i.group or i.image_id for i in imgs] for d, imgs in by_dataset.items()}
        self.datasets = [(d, imgs[0].modality) for d, imgs in by_dataset.items()]
        # the matrix the profile plans (its corruption sets per modality), as in a real run
        self.plan = dict(with_baseline=False, corruption_sets=self.thresholds.get("corruption_sets", ()),
                         mapping=self.thresholds.get("corruption_mapping") or None)
        template = plan_cells(["sim-robust"], self.datasets, **self.plan)
        specs: dict[RequestSpec, bool] = {}
        for cell in template:
            for spec in cell.requests():
                plain = RequestSpec(spec.condition, spec.prompt_id, spec.repeat)
                specs[plain] = specs.get(plain, False) or spec.embed
        self.requests: list[ScoreRequest] = []
        #: (dataset, image id, condition, prompt id, repeat) -> position in ``requests``
        self.index: dict[tuple[str, str, str, str, int], int] = {}
        #: conditions that do not apply to an image (e.g. saturate on grey): the engine's failed result
        self.inapplicable: dict[tuple[str, str, str, str, int], ScoreResult] = {}
        for image in self.images:
            for spec, embed in specs.items():
                pixels = image.pixels
                if spec.condition != CLEAN:
                    name, severity = parse_condition(spec.condition)
                    try:
                        pixels = apply(pixels, name, severity, seed=0)
                    except ValueError as exc:
                        failed = ScoreResult.failed(self.thresholds["scoring"], f"{CONDITION_FAILED}{spec.condition}: {exc}")
                        if failed.loss_stage() != "not_applicable":
                            raise
                        self.inapplicable[(image.dataset, image.image_id, spec.condition, spec.prompt_id, spec.repeat)] = failed
                        continue
                self.index[(image.dataset, image.image_id, spec.condition, spec.prompt_id, spec.repeat)] = len(self.requests)
                self.requests.append(
                    ScoreRequest(
                        image=pixels,
                        prompt=build_prompt(image.modality, spec.prompt_id),
                        meta=RequestMeta(image.dataset, image.modality, image.image_id, spec.condition, spec.prompt_id, spec.repeat),
                        embed=embed,
                        # made once, as the engine's preparation pool makes it once per request
                        judge_input=SimulatedJudge.prepare_input(pixels),
                    )
                )

    def run(self, spec: str, seed: int) -> dict[str, str]:
        """One seeded audit of ``spec``: cell test id (model part left out) -> outcome."""
        judge = SimulatedJudge(spec, JudgeSettings(seed=seed))
        results = judge.score(self.requests)
        cells = plan_cells([spec], self.datasets, **self.plan)
        family = effective_family_sizes(cells)
        outcomes = {}
        for cell in cells:
            def lookup(rs: RequestSpec, image_id: str, cell: Cell = cell):
                key = (cell.dataset, image_id, rs.condition, rs.prompt_id, rs.repeat)
                i = self.index.get(key)
                return self.inapplicable.get(key) if i is None else results[i]

            extra = {"groups": self.groups[cell.dataset]} if self.grouped else {}
            verdict = evaluate_cell(
                cell, self.image_ids[cell.dataset], lookup, self.thresholds, family_size=family[cell], seed=seed, **extra
            ).verdict
            outcomes[f"{cell.property}[{cell.param_id.removeprefix(cell.label + '-')}]"] = verdict.outcome
        return outcomes


def failure_rates(harness: Harness, spec: str, seeds: range) -> tuple[Counter, int, list[dict[str, str]]]:
    """Per cell: in how many seeded runs it failed; plus the run count and every run's outcomes."""
    failed: Counter = Counter()
    runs = []
    for seed in seeds:
        outcomes = harness.run(spec, seed)
        runs.append(outcomes)
        failed.update(k for k, v in outcomes.items() if v == "fail")
    return failed, len(runs), runs
