"""Planning: cells -> deduplicated keyed work items -> batches -> each worker's share.

Batches are formed from the whole plan before they are shared out (whole batches go to workers),
so a request meets the same batch companions for any ``-n``: reports do not depend on the number
of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..matrix import RequestSpec

#: Most bytes of source images one batch may hold; a batch's condition images are made from them
#: at once, so this bounds a batch's image memory (a batch always holds at least one request).
MAX_BATCH_IMAGE_BYTES = 256 * 2**20

@dataclass(frozen=True)
class WorkItem:
    """One request of one model on one image: what to compute and under which key."""

    model: str
    dataset: str
    image_id: str
    spec: RequestSpec
    key: str


def plain(spec: RequestSpec) -> RequestSpec:
    """The spec without ``embed`` (a request wanted with and without embedding is one request)."""
    return RequestSpec(spec.condition, spec.prompt_id, spec.repeat) if spec.embed else spec


def batches(items: Sequence[WorkItem], size: int, nbytes: Callable[[WorkItem], int]) -> Iterator[list[WorkItem]]:
    """Batches of ``size`` items, each holding at most MAX_BATCH_IMAGE_BYTES of source images
    (``nbytes(item)``: its source image's bytes); repeatability copies alone (a batch of one)."""
    batch: list[WorkItem] = []
    held = 0
    for item in (i for i in items if not i.spec.repeat):
        n = nbytes(item)
        if batch and (len(batch) == size or held + n > MAX_BATCH_IMAGE_BYTES):
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += n
    if batch:
        yield batch
    for item in items:
        if item.spec.repeat:
            yield [item]


def plan_batches(
    items: Sequence[WorkItem], size: Callable[[str], int], nbytes: Callable[[WorkItem], int],
) -> list[list[WorkItem]]:
    """The items in batches, per model (``size(model)`` items each), in a fixed order
    (dataset, prompt, condition, image)."""
    out: list[list[WorkItem]] = []
    for model in dict.fromkeys(i.model for i in items):
        mine = sorted((i for i in items if i.model == model), key=lambda i: (i.dataset, i.spec.prompt_id, i.spec.condition, i.image_id))
        out += batches(mine, size(model), nbytes)
    return out


def share_out(batches: Sequence[list[WorkItem]], worker_count: int) -> list[int]:
    """The worker index computing each whole batch: in turn, in plan order, so that every worker
    gets the same number of each model's full batches and of its single-request batches (within
    one), and so as much device time; the plan is the same in every worker, so is the share."""
    return [n % worker_count for n in range(len(batches))]
