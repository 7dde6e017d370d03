"""Preparing a batch for the judge: condition images (corruption) and the judge's own inputs.

A :class:`Job` is plain data (arrays, names, numbers) so that it can run in another process
(``pipeline``); :func:`run_job` is what runs there. Its results do not depend on the process:
every corruption draw is seeded from the image content, the corruption, the severity and the
run seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: ``prepare(image) -> anything picklable``: a judge's per-image work that needs no model (e.g.
#: the base64 encoding of an HTTP judge), done ahead in the preparation pool; None: nothing to do.
JudgeInput = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class Task:
    """One condition image to make: ``corruption`` (a built-in id) applied to ``image`` with the
    resolved parameter ``values``. ``corruption`` None: ``image`` is already the condition image
    (clean, published pre-corrupted, or a user corruption made in the engine's process).
    ``error``: why the condition image could not be made (found before the job ran)."""

    image: np.ndarray | None = field(default=None, repr=False)
    corruption: str | None = None
    severity: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    error: str | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled in a pool process: the image arrives writable; it is made read-only, as the
        run's images are, so that the corruptions' per-image digest memo applies there too
        (``conditions.registry.image_digest``)."""
        if state.get("image") is not None:
            state["image"].setflags(write=False)
        self.__dict__.update(state)


@dataclass(frozen=True)
class Job:
    """The tasks of one batch, in order, and the judge's input step."""

    tasks: list[Task]
    judge_input: JudgeInput | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the tasks' source images (a prepared job holds about as many again)."""
        return sum(t.image.nbytes for t in self.tasks if t.image is not None)


@dataclass(frozen=True)
class Prepared:
    """A condition image and the judge's input made from it, or why the image could not be made."""

    image: np.ndarray | None = field(default=None, repr=False)
    judge_input: Any = field(default=None, repr=False)
    error: str | None = None


def make_image(task: Task) -> np.ndarray:
    """The task's condition image; ValueError when the corruption does not apply to the image."""
    assert task.image is not None
    if task.corruption is None:
        return task.image
    from ..conditions.registry import REGISTRY, _apply_checked

    return _apply_checked(task.image, REGISTRY[task.corruption], task.severity, task.values, task.seed)


def run_job(job: Job, stop: Any = None) -> list[Prepared]:
    """Make every task's image and judge input, in order. ``stop`` (a ``threading.Event``, for a
    preparation thread): once set, return at the next image (the caller was interrupted and
    drops the result)."""
    out: list[Prepared] = []
    for task in job.tasks:
        if stop is not None and stop.is_set():
            break
        if task.error is not None:
            out.append(Prepared(error=task.error))
            continue
        try:
            image = make_image(task)
        except ValueError as exc:
            out.append(Prepared(error=str(exc)))
            continue
        judge_input = None
        if job.judge_input is not None:
            try:
                judge_input = job.judge_input(image)
            except Exception:  # noqa: BLE001 - only a head start: the judge makes it again and reports
                judge_input = None
        out.append(Prepared(image=image, judge_input=judge_input))
    return out
