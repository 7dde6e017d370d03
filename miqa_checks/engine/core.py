"""Plan -> deduplicate -> drop stored -> batch -> store.

The engine turns the selected cells into per-image requests, keys each one by everything that
determines its answer, and computes only what the result store lacks, in batches that are
committed as they finish. Under pytest-xdist each worker computes the share of the keys it
owns (key hash modulo worker count) and reads the others' from the shared store, so each request
is inferred once across workers. Models load lazily, once per process, and not at all when
everything needed is stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import __version__
from .cache import ResultStore
from .config import Settings
from .errors import JudgeError
from .matrix import CLEAN, Cell, RequestSpec, model_label
from .prompts import MEDGEMMA_SYSTEM_PROMPT, build_prompt
from .records import CONDITION_FAILED, ImageRecord, RequestMeta, ScoreRequest, ScoreResult

#: A worker whose heartbeat is older than this is presumed dead; its keys are computed by others.
STALE_AFTER_S = 60.0
HEARTBEAT_EVERY_S = 5.0
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


def image_hash(image: np.ndarray) -> str:
    """sha256 over shape, dtype and bytes of an image."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


class Engine:
    """Computes and serves the results the selected cells need, for one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: ResultStore,
        worker: str = "main",
        worker_index: int = 0,
        worker_count: int = 1,
        progress: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self.worker_index = worker_index
        self.worker_count = max(1, worker_count)
        self.progress = progress
        self.errors: list[dict[str, str]] = []
        self._datasets: dict[str, Any] | None = None
        self._records: dict[tuple[str, str], ImageRecord] = {}
        self._hashes: dict[tuple[str, str], str] = {}
        self._judges: dict[str, Any] = {}
        self._identities: dict[str, str | None] = {}
        self._results: dict[str, ScoreResult] = {}
        self._items: dict[tuple[str, str, str, RequestSpec], WorkItem] = {}
        self.used: dict[str, WorkItem] = {}
        self.inferred = 0  # requests this process sent to a judge
        self._waiting_since: dict[str, float] = {}  # peer worker -> when we first found it absent
        self._owners: dict[str, int] = {}  # request key -> worker index of its planned batch

    # ---------------------------------------------------------------- data
    def datasets(self) -> dict[str, Any]:
        """Dataset name -> ``miqa_checks.data.Dataset`` (loaded once, same choice in every worker)."""
        if self._datasets is None:
            from .data import load_all

            loaded = load_all(list(self.settings.data), max_images=self.settings["max_images"], seed=self.settings.seed)
            self._datasets = {d.name: d for d in loaded}
            for d in loaded:
                for r in d.records:
                    self._records[(d.name, r.image_id)] = r
                self.errors += [
                    {"model": "", "dataset": e.dataset, "file_or_image": e.file, "stage": "data", "reason": e.reason}
                    for e in d.errors
                ]
        return self._datasets

    def image_ids(self, dataset: str) -> list[str]:
        """The chosen readable images of a dataset, sorted."""
        d = self.datasets().get(dataset)
        return sorted(r.image_id for r in d.records) if d is not None else []

    def _hash(self, dataset: str, image_id: str) -> str:
        key = (dataset, image_id)
        if key not in self._hashes:
            self._hashes[key] = image_hash(self._records[key].image)
        return self._hashes[key]

    # ---------------------------------------------------------------- judges
    def judge(self, model: str):
        """The judge for a model spec, constructed once per process (weights load on first score)."""
        if model not in self._judges:
            from .judges import JudgeSettings, load_judge

            t = self.settings
            self._judges[model] = load_judge(
                model,
                JudgeSettings(
                    method=t["scoring"],
                    device=t.device,
                    batch_size=t.batch_size,
                    max_new_tokens=t["max_new_tokens"],
                    system_prompt=self.system_prompt(model),
                    trust_remote_code=t.trust_remote_code,
                    home=(t.cache_dir or Path(".miqa_cache")),
                    seed=t.seed,
                ),
            )
        return self._judges[model]

    def system_prompt(self, model: str) -> str | None:
        """The profile's system prompt; under ``paper``, MedGemma gets the published one."""
        if self.settings["system_prompt"]:
            return self.settings["system_prompt"]
        if self.settings.profile == "paper" and "medgemma" in model.lower():
            return MEDGEMMA_SYSTEM_PROMPT
        return None

    def identity(self, model: str) -> str | None:
        """The judge's identity, or None when it cannot be loaded (the reason goes to ``errors``)."""
        if model not in self._identities:
            try:
                self._identities[model] = self.judge(model).identity()
            except JudgeError as exc:
                self._identities[model] = None
                self._judge_failed(model, str(exc))
        return self._identities[model]

    def _judge_failed(self, model: str, reason: str) -> None:
        self.errors.append({"model": model_label(model), "dataset": "", "file_or_image": "", "stage": "judge", "reason": reason})

    # ---------------------------------------------------------------- keys
    def _condition_params(self, dataset: str, condition: str) -> dict[str, Any]:
        if condition == CLEAN:
            return {}
        from .conditions import parameters, parse_condition

        name, severity = parse_condition(condition)
        source = self.settings["corruption_source"]
        if source == "precorrupted":
            return {"source": source}
        params = self.settings["corruption_params"]
        modality = self.datasets()[dataset].modality
        return {"source": source, "set": params, "params": parameters(name, severity, params, modality=modality), "seed": self.settings.seed}

    def item(self, model: str, dataset: str, image_id: str, spec: RequestSpec) -> WorkItem | None:
        """The keyed work item, None when the model cannot be loaded."""
        index = (model, dataset, image_id, spec)
        if index not in self._items:
            identity = self.identity(model)
            if identity is None:
                return None
            modality = self.datasets()[dataset].modality
            payload = {
                "v": __version__,
                "judge": identity,
                "image": self._hash(dataset, image_id),
                "condition": spec.condition,
                "condition_params": self._condition_params(dataset, spec.condition),
                "prompt": build_prompt(modality, spec.prompt_id),
                "system": self.system_prompt(model),
                "max_new_tokens": self.settings["max_new_tokens"],
                "repeat": spec.repeat,
            }
            key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
            self._items[index] = WorkItem(model, dataset, image_id, spec, key)
        return self._items[index]

    def _owner(self, key: str) -> int:
        """The worker computing ``key``: the owner of its batch once planned, else by key hash."""
        owner = self._owners.get(key)
        return owner if owner is not None else int(key[:8], 16) % self.worker_count

    # ---------------------------------------------------------------- planning and computing
    def plan(self, cells: Iterable[Cell]) -> list[WorkItem]:
        """Deduplicated work items for the cells (embedding wanted if any cell wants it)."""
        wanted: dict[tuple[str, str, str, RequestSpec], RequestSpec] = {}
        for cell in cells:
            ids = self.image_ids(cell.dataset)
            for spec in cell.requests():
                plain = RequestSpec(spec.condition, spec.prompt_id, spec.repeat)
                for image_id in ids:
                    index = (cell.model, cell.dataset, image_id, plain)
                    if spec.embed or index not in wanted:
                        wanted[index] = spec
        items = []
        for (model, dataset, image_id, _), spec in wanted.items():
            item = self.item(model, dataset, image_id, spec)
            if item is not None:
                items.append(item)
        return items

    def prepare(self, cells: Sequence[Cell]) -> None:
        """Compute this worker's share of everything the cells need, then mark the share done.

        Batches are formed from the whole plan before it is shared out (whole batches go to
        workers), so each request meets the same batch companions for any ``-n``: the reports do
        not depend on the number of workers.
        """
        mine = []
        for batch in self._plan_batches(self.plan(cells)):
            owner = int(batch[0].key[:8], 16) % self.worker_count
            self._owners.update((item.key, owner) for item in batch)
            if owner == self.worker_index:
                mine.append(batch)
        with _Heartbeat(self.store.path.parent, self.store.run_id, self.worker):
            self._compute_batches(mine)

    def _missing(self, items: Sequence[WorkItem]) -> list[WorkItem]:
        todo = [i for i in items if i.key not in self._results or (i.spec.embed and self._results[i.key].embedding is None)]
        if not todo:
            return []
        found = self.store.get_many([i.key for i in todo], need_embedding={i.key: i.spec.embed for i in todo})
        self._results.update(found)
        return [i for i in todo if i.key not in found]

    def _plan_batches(self, items: Sequence[WorkItem]) -> list[list[WorkItem]]:
        """The items in batches, per model, in a fixed order (dataset, prompt, condition, image)."""
        batches: list[list[WorkItem]] = []
        for model in dict.fromkeys(i.model for i in items):
            mine = sorted((i for i in items if i.model == model), key=lambda i: (i.dataset, i.spec.prompt_id, i.spec.condition, i.image_id))
            batches += self._batches(model, mine)
        return batches

    def _compute_batches(self, batches: Sequence[list[WorkItem]]) -> None:
        """Run the requests of the batches that the store lacks (a batch shrinks to those)."""
        pending = {i.key for i in self._missing([i for batch in batches for i in batch])}
        if not pending:
            return
        bar = _progress(len(pending), f"miqa {self.worker}", self.progress)
        try:
            for batch in batches:
                todo = [i for i in batch if i.key in pending]
                if todo:
                    self._run_batch(todo[0].model, todo)
                    bar.update(len(todo))
        finally:
            bar.close()

    def _batches(self, model: str, items: list[WorkItem]) -> Iterable[list[WorkItem]]:
        """Batches of the judge's size, each holding at most MAX_BATCH_IMAGE_BYTES of source images;
        repeatability copies alone (a batch of one)."""
        size = self.settings.batch_size or self.judge(model).default_batch_size
        batch: list[WorkItem] = []
        held = 0
        for item in (i for i in items if not i.spec.repeat):
            nbytes = self._records[(item.dataset, item.image_id)].image.nbytes
            if batch and (len(batch) == size or held + nbytes > MAX_BATCH_IMAGE_BYTES):
                yield batch
                batch, held = [], 0
            batch.append(item)
            held += nbytes
        if batch:
            yield batch
        for item in items:
            if item.spec.repeat:
                yield [item]

    def _request(self, item: WorkItem) -> ScoreRequest:
        record = self._records[(item.dataset, item.image_id)]
        image = record.image
        if item.spec.condition != CLEAN:
            image = self._condition_image(item.dataset, record, item.spec.condition)
        return ScoreRequest(
            image=image,
            prompt=build_prompt(record.modality, item.spec.prompt_id),
            meta=RequestMeta(item.dataset, record.modality, item.image_id, item.spec.condition, item.spec.prompt_id, item.spec.repeat),
            system_prompt=self.system_prompt(item.model),
            embed=item.spec.embed,
        )

    def _condition_image(self, dataset: str, record: ImageRecord, condition: str) -> np.ndarray:
        from .conditions import apply, parse_condition

        name, severity = parse_condition(condition)
        if self.settings["corruption_source"] == "precorrupted":
            lookup = self.datasets()[dataset].precorrupted
            image = lookup(record.image_id, name, severity) if lookup else None
            if image is None:
                raise ValueError(f"no published corrupted image for {condition} in {dataset}")
            return image
        return apply(
            record.image, name, severity, seed=self.settings.seed,
            params=self.settings["corruption_params"], modality=record.modality,
        )

    def _run_batch(self, model: str, batch: list[WorkItem]) -> None:
        method = self.settings["scoring"]
        requests: list[ScoreRequest] = []
        ready: list[WorkItem] = []
        done: list[tuple[WorkItem, ScoreResult]] = []
        for item in batch:
            try:
                requests.append(self._request(item))
                ready.append(item)
            except ValueError as exc:  # reported from the stored result by result_errors()
                done.append((item, ScoreResult.failed(method, f"{CONDITION_FAILED}{item.spec.condition}: {exc}")))
        if requests:
            try:
                results = self.judge(model).score(requests)
                self.inferred += len(requests)
            except JudgeError as exc:
                self._judge_failed(model, str(exc))
                results = [ScoreResult.failed(method, str(exc)) for _ in requests]
            except Exception as exc:  # noqa: BLE001 - a judge bug must not end the audit; it is recorded
                results = self._score_alone(model, requests, exc)
            done += list(zip(ready, results))
        self.store.put_many((item.key, result) for item, result in done)
        self._results.update({item.key: result for item, result in done})

    def _score_alone(self, model: str, requests: list[ScoreRequest], exc: Exception) -> list[ScoreResult]:
        """After a batch raised: score each request on its own, so only the failing items fail."""
        method = self.settings["scoring"]
        if len(requests) == 1:
            return [ScoreResult.failed(method, f"{type(exc).__name__}: {exc}")]
        results = []
        for request in requests:
            try:
                (result,) = self.judge(model).score([request])
                self.inferred += 1
            except JudgeError as err:
                self._judge_failed(model, str(err))
                result = ScoreResult.failed(method, str(err))
            except Exception as err:  # noqa: BLE001
                result = ScoreResult.failed(method, f"{type(err).__name__}: {err}")
            results.append(result)
        return results

    # ---------------------------------------------------------------- serving results
    def lookup_for(self, cell: Cell) -> Callable[[RequestSpec, str], ScoreResult | None]:
        """Make sure the cell's results exist (wait for their owners, else compute), then serve them."""
        items = self.plan([cell])
        missing = self._missing(items)
        while missing and self.worker_count > 1:
            owners = {f"gw{self._owner(i.key)}" for i in missing} - {self.worker}
            if not any(self._alive(w) for w in owners):
                break
            time.sleep(0.5)
            missing = self._missing(missing)
        if missing:
            self._compute_batches(self._plan_batches(missing))
        by_spec = {(i.dataset, i.image_id, RequestSpec(i.spec.condition, i.spec.prompt_id, i.spec.repeat)): i for i in items}
        for item in items:
            self.used[item.key] = item

        def lookup(spec: RequestSpec, image_id: str) -> ScoreResult | None:
            item = by_spec.get((cell.dataset, image_id, RequestSpec(spec.condition, spec.prompt_id, spec.repeat)))
            return None if item is None else self._results.get(item.key)

        return lookup

    def _alive(self, worker: str) -> bool:
        """A peer still computing its share: beating recently, or not started for < STALE_AFTER_S."""
        state = self.store.worker_state(worker)
        if state is None:  # not started yet; a peer that never starts is given up on
            first_wait = self._waiting_since.setdefault(worker, time.monotonic())
            return time.monotonic() - first_wait < STALE_AFTER_S
        age, done = state
        return not done and age < STALE_AFTER_S

    def score_rows(self) -> list[dict[str, Any]]:
        """``scores.csv`` rows for every request a cell of this process used (repeat copies left out)."""
        rows = []
        for key, item in self.used.items():
            result = self._results.get(key)
            if result is None or item.spec.repeat:
                continue
            probs = list(result.probs) if result.probs is not None else [None] * 5
            rows.append(
                {
                    "model": model_label(item.model),
                    "dataset": item.dataset,
                    "image_id": item.image_id,
                    "condition": item.spec.condition,
                    "prompt_id": item.spec.prompt_id,
                    "score": result.score,
                    "parse_ok": result.parse_ok,
                    "raw_text": result.raw_text,
                    "method": result.method,
                    "error": result.error or "",
                    **{f"p{k + 1}": p for k, p in enumerate(probs)},
                }
            )
        return rows

    def result_errors(self) -> list[dict[str, str]]:
        """Error records for the used requests that failed (``stage`` score) or whose answer did not
        parse (``stage`` parse), built from the results served, so a rerun that reads them from the
        store reports the same records as the run that computed them."""
        out = []
        for key, item in self.used.items():
            result = self._results.get(key)
            if result is None:
                continue
            stage = result.loss_stage()
            if stage is None:
                continue
            reason = f"unparseable answer: {result.raw_text[:120]!r}" if stage == "parse" else result.error
            where = f"{item.image_id} [{item.spec.condition}, {item.spec.prompt_id}{', repeat' if item.spec.repeat else ''}]"
            out.append({"model": model_label(item.model), "dataset": item.dataset, "file_or_image": where, "stage": stage, "reason": reason})
        return out

    def provenance(self) -> dict[str, Any]:
        """Per model: identity and the judge's own provenance (only for judges that loaded)."""
        out = {}
        for model, judge in self._judges.items():
            try:
                out[model_label(model)] = judge.provenance()
            except Exception as exc:  # noqa: BLE001 - provenance must never break reporting
                out[model_label(model)] = {"spec": model_label(model), "error": str(exc)}
        return out

    def close(self) -> None:
        for judge in self._judges.values():
            judge.close()
        self.store.close()


class _Heartbeat:
    """Beats for a worker every few seconds on its own connection; marks the share done on exit."""

    def __init__(self, folder: Path, run_id: str, worker: str) -> None:
        self.store = ResultStore(folder, run_id)
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            self.store.beat(self.worker)

    def __enter__(self) -> "_Heartbeat":
        self.store.beat(self.worker)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.beat(self.worker, done=True)
        self.store.close()


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, leave=False, dynamic_ncols=True)
