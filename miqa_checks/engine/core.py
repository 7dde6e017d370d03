"""The engine: plan -> deduplicate -> drop stored -> share out -> prepare ahead -> judge -> store.

It turns the selected cells into per-image requests keyed by everything that determines their
answer (``keys``), forms batches from the whole plan and shares whole batches out to the xdist
workers (``plan``, ``workers``), and computes only what the result store lacks: the next batches
are prepared in a pool while the judge scores the current one (``pipeline``), and each batch is
committed to the store as soon as it is scored, on a thread of its own while the judge scores the
next (``writer``). Models load lazily, once per process, and not at all when everything needed is
stored.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from .store import ResultStore
from ..config import Settings
from ..errors import JudgeError
from ..matrix import CLEAN, Cell, RequestSpec
from ..prompts import build_prompt
from ..data.validate import ImageError
from ..records import CONDITION_FAILED, IMAGE_FAILED, ImageRecord, RequestMeta, ScoreRequest, ScoreResult
from . import rows
from .images import Images
from .keys import request_key
from .models import Models
from .pipeline import Preparer, choose
from .plan import WorkItem, plain, plan_batches, share_out
from .prepare import Job, Prepared, Task
from .workers import Heartbeat, Peers
from .writer import StoreWriter


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
        self.images = Images(settings, self.errors)
        self.models = Models(settings, self.errors)
        self.peers = Peers(store, self.worker_count)
        self._results: dict[str, ScoreResult] = {}
        self._items: dict[tuple[str, str, str, RequestSpec], WorkItem] = {}
        self._columns: dict[tuple[str, str, RequestSpec], _Column] = {}
        self._views: dict[tuple[str, str, tuple[RequestSpec, ...]], _View] = {}
        self._keys: dict[tuple[str, str, str, RequestSpec], str] = {}
        self._params: dict[tuple[str, str], dict[str, Any]] = {}
        self._values_memo: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.used: dict[str, WorkItem] = {}
        self.inferred = 0  # requests this process sent to a judge
        self.preparation = "none"  # how the last computation prepared its batches (for benchmarks)

    # ---------------------------------------------------------------- data and judges
    def datasets(self) -> dict[str, Any]:
        """Dataset name -> ``miqa_checks.data.Dataset`` (loaded once, same choice in every worker)."""
        return self.images.datasets()

    def image_ids(self, dataset: str) -> list[str]:
        """The chosen readable images of a dataset, sorted."""
        return self.images.image_ids(dataset)

    def groups(self, dataset: str) -> list[str]:
        """The group of each of :meth:`image_ids` (same order): images of one group (crops of one
        source, frames of one clip, one patient) are not independent."""
        return [self.images.group(dataset, i) for i in self.image_ids(dataset)]

    def judge(self, model: str):
        """The judge for a model spec, constructed once per process (weights load on first score)."""
        return self.models.judge(model)

    def system_prompt(self, model: str) -> str | None:
        return self.models.system_prompt(model)

    def identity(self, model: str) -> str | None:
        """The judge's identity, or None when it cannot be loaded (the reason goes to ``errors``)."""
        return self.models.identity(model)

    # ---------------------------------------------------------------- keys
    def _condition_params(self, dataset: str, condition: str) -> dict[str, Any]:
        """What determines a condition image besides the source image (cached per dataset and condition)."""
        if (dataset, condition) not in self._params:
            self._params[(dataset, condition)] = self._resolve_params(dataset, condition)
        return self._params[(dataset, condition)]

    def _resolve_params(self, dataset: str, condition: str) -> dict[str, Any]:
        if condition == CLEAN:
            return {}
        from ..conditions import parameters, parse_condition

        name, severity = parse_condition(condition)
        source = self.settings["corruption_source"]
        if source == "precorrupted":
            return {"source": source}
        params = self.settings["corruption_params"]
        modality = self.images.modality(dataset)
        return {"source": source, "set": params, "params": parameters(name, severity, params, modality=modality), "seed": self.settings.seed}

    def item(self, model: str, dataset: str, image_id: str, spec: RequestSpec) -> WorkItem | None:
        """The keyed work item, None when the model cannot be loaded."""
        index = (model, dataset, image_id, spec)
        if index not in self._items:
            key = self._key(model, dataset, image_id, plain(spec))
            if key is None:
                return None
            self._items[index] = WorkItem(model, dataset, image_id, spec, key)
        return self._items[index]

    def _key(self, model: str, dataset: str, image_id: str, spec: RequestSpec) -> str | None:
        """A request's store key (the same with or without ``embed``), computed once per process."""
        index = (model, dataset, image_id, spec)
        if index not in self._keys:
            identity = self.identity(model)
            if identity is None:
                return None
            self._keys[index] = request_key(
                judge=identity,
                image=self.images.hash(dataset, image_id),
                condition=spec.condition,
                condition_params=self._condition_params(dataset, spec.condition),
                prompt=build_prompt(self.images.modality(dataset), spec.prompt_id),
                system=self.system_prompt(model),
                max_new_tokens=self.settings["max_new_tokens"],
                repeat=spec.repeat,
            )
        return self._keys[index]

    # ---------------------------------------------------------------- planning and computing
    def plan(self, cells: Iterable[Cell]) -> list[WorkItem]:
        """Deduplicated work items for the cells (embedding wanted if any cell wants it), in
        first-seen order of (model, dataset, request), each over the dataset's images."""
        specs: dict[tuple[str, str, RequestSpec], RequestSpec] = {}
        for cell in cells:
            for spec in cell.requests():
                index = (cell.model, cell.dataset, plain(spec))
                if spec.embed or index not in specs:
                    specs[index] = spec
        items: list[WorkItem] = []
        for (model, dataset, _), spec in specs.items():
            items += self._column(model, dataset, spec).items
        return items

    def _column(self, model: str, dataset: str, spec: RequestSpec) -> "_Column":
        """One request's work items over a dataset's images (no item when the model cannot be
        loaded), keyed once per process and shared by every cell that asks for it."""
        index = (model, dataset, spec)
        column = self._columns.get(index)
        if column is None:
            ids = self.image_ids(dataset)
            items = [self.item(model, dataset, image_id, spec) for image_id in ids]
            column = _Column([i for i in items if i is not None], dict(zip(ids, items)))
            self._columns[index] = column
        return column

    def _view(self, cell: Cell) -> "_View":
        """The cell's work items and its (request, image) -> item map, from the planned columns
        (shared by the cells that ask for the same requests)."""
        chosen: dict[RequestSpec, RequestSpec] = {}
        for spec in cell.requests():
            bare = plain(spec)
            if spec.embed or bare not in chosen:
                chosen[bare] = spec
        index = (cell.model, cell.dataset, tuple(chosen.values()))
        view = self._views.get(index)
        if view is None:
            columns = {bare: self._column(cell.model, cell.dataset, spec) for bare, spec in chosen.items()}
            used = {i.key: i for c in columns.values() for i in c.items}
            view = self._views[index] = _View([i for c in columns.values() for i in c.items], used, columns)
        return view

    def _plan_batches(self, items: Sequence[WorkItem]) -> list[list[WorkItem]]:
        return plan_batches(items, self.models.batch_size, lambda i: self.images.nbytes(i.dataset, i.image_id))

    def prepare(self, cells: Sequence[Cell]) -> None:
        """Compute this worker's share of everything the cells need, then mark the share done.

        Batches are formed from the whole plan before it is shared out (whole batches go to
        workers), so each request meets the same batch companions for any ``-n``: the reports do
        not depend on the number of workers.
        """
        mine = []
        batches = self._plan_batches(self.plan(cells))
        for batch, owner in zip(batches, share_out(batches, self.worker_count)):
            self.peers.assign([i.key for i in batch], owner)
            if owner == self.worker_index:
                mine.append(batch)
        with Heartbeat(self.store.path.parent, self.store.run_id, self.worker):
            self._compute_batches(mine)

    def _missing(self, items: Sequence[WorkItem]) -> list[WorkItem]:
        todo = [i for i in items if i.key not in self._results or (i.spec.embed and self._results[i.key].embedding is None)]
        if not todo:
            return []
        found = self.store.get_many([i.key for i in todo], need_embedding={i.key: i.spec.embed for i in todo})
        self._results.update(found)
        return [i for i in todo if i.key not in found]

    def _compute_batches(self, batches: Sequence[list[WorkItem]]) -> None:
        """Run the requests of the batches that the store lacks (a batch shrinks to those), the
        next batches prepared ahead while the judge scores one; each batch stored when scored."""
        pending = {i.key for i in self._missing([i for batch in batches for i in batch])}
        todo = [b for b in ([i for i in batch if i.key in pending] for batch in batches) if b]
        if not todo:
            return
        processes, threaded = choose(len(pending), self.worker_count)
        preparer = Preparer(processes, threaded=threaded)
        self.preparation = preparer.mode
        writer = StoreWriter(self.store) if preparer.mode != "inline" else None  # inline: the serial engine
        commit = writer.put if writer is not None else self.store.put_many
        bar = _progress(len(pending), f"miqa {self.worker}", self.progress)
        try:
            for batch, prepared in zip(todo, preparer.map(self._job(b) for b in todo)):
                self._run_batch(batch, prepared, commit)
                bar.update(len(batch))
        except BaseException:
            preparer.stop()  # Ctrl-C, SIGTERM, a judge bug: the pool stops now; scored batches are stored
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
            raise
        finally:
            bar.close()
        if writer is not None:
            writer.close()
        preparer.close()

    def _job(self, batch: list[WorkItem]) -> Job:
        """What preparing the batch takes: one task per item, and the judge's input step."""
        judge_input = getattr(self.judge(batch[0].model), "prepare_input", None)
        return Job([self._task(item) for item in batch], judge_input)

    def _task(self, item: WorkItem) -> Task:
        try:
            record = self.images.record(item.dataset, item.image_id)
        except ImageError as exc:  # changed or gone since it was listed: its requests fail, the run goes on
            return Task(error=f"{IMAGE_FAILED}{exc}")
        if item.spec.condition == CLEAN:
            return Task(record.image)
        try:
            return self._condition_task(item.dataset, record, item.spec.condition)
        except ValueError as exc:
            return Task(error=str(exc))

    def _condition_task(self, dataset: str, record: ImageRecord, condition: str) -> Task:
        """A built-in corruption is made in the pool; a published image is looked up and a user
        corruption (its code may live in a conftest the pool cannot import) is made here."""
        from ..conditions.registry import REGISTRY, _apply_checked, check_image, parse_condition

        name, severity = parse_condition(condition)
        if self.settings["corruption_source"] == "precorrupted":
            lookup = self.datasets()[dataset].precorrupted
            image = lookup(record.image_id, name, severity) if lookup else None
            if image is None:
                raise ValueError(f"no published corrupted image for {condition} in {dataset}")
            return Task(image)
        values = self._values(name, severity, record.modality)
        check_image(record.image)
        entry = REGISTRY[name]
        if getattr(entry.fn, "__module__", "").startswith("miqa_checks."):
            return Task(record.image, name, severity, values, self.settings.seed)
        return Task(_apply_checked(record.image, entry, severity, values, self.settings.seed))

    def _values(self, name: str, severity: int, modality: str) -> dict[str, Any]:
        """What a corruption's function is called with, resolved once per corruption, severity and
        modality (the judge's thread builds every batch's tasks)."""
        index = (name, severity, modality)
        if index not in self._values_memo:
            from ..conditions.registry import _fn_values, parameters

            self._values_memo[index] = _fn_values(parameters(name, severity, self.settings["corruption_params"], modality))
        return self._values_memo[index]

    def _request(self, item: WorkItem, prepared: Prepared) -> ScoreRequest:
        record = self.images.record(item.dataset, item.image_id)
        assert prepared.image is not None
        return ScoreRequest(
            image=prepared.image,
            prompt=build_prompt(record.modality, item.spec.prompt_id),
            meta=RequestMeta(item.dataset, record.modality, item.image_id, item.spec.condition, item.spec.prompt_id, item.spec.repeat),
            system_prompt=self.system_prompt(item.model),
            embed=item.spec.embed,
            judge_input=prepared.judge_input,
        )

    def _run_batch(
        self, batch: list[WorkItem], prepared: list[Prepared], commit: Callable[[list[tuple[str, ScoreResult]]], None],
    ) -> None:
        """Score the batch's prepared requests and ``commit`` (key, result) pairs (failed ones too)."""
        model = batch[0].model
        method = self.settings["scoring"]
        requests: list[ScoreRequest] = []
        ready: list[WorkItem] = []
        done: list[tuple[WorkItem, ScoreResult]] = []
        for item, prep in zip(batch, prepared):
            if prep.error is not None:  # reported from the stored result by result_errors()
                reason = prep.error if prep.error.startswith(IMAGE_FAILED) else f"{CONDITION_FAILED}{item.spec.condition}: {prep.error}"
                done.append((item, ScoreResult.failed(method, reason)))
            else:
                requests.append(self._request(item, prep))
                ready.append(item)
        if requests:
            try:
                results = self.judge(model).score(requests)
                self.inferred += len(requests)
            except JudgeError as exc:
                self.models.failed(model, str(exc))
                results = [ScoreResult.failed(method, str(exc)) for _ in requests]
            except Exception as exc:  # noqa: BLE001 - a judge bug must not end the audit; it is recorded
                results = self._score_alone(model, requests, exc)
            done += list(zip(ready, results))
        commit([(item.key, result) for item, result in done])
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
                self.models.failed(model, str(err))
                result = ScoreResult.failed(method, str(err))
            except Exception as err:  # noqa: BLE001
                result = ScoreResult.failed(method, f"{type(err).__name__}: {err}")
            results.append(result)
        return results

    # ---------------------------------------------------------------- serving results
    def lookup_for(self, cell: Cell) -> Callable[[RequestSpec, str], ScoreResult | None]:
        """Make sure the cell's results exist (wait for their owners, else compute), then serve them."""
        view = self._view(cell)
        missing = self._missing(view.items)
        while missing and self.worker_count > 1:
            owners = {f"gw{self.peers.owner(i.key)}" for i in missing} - {self.worker}
            if not any(self.peers.alive(w) for w in owners):
                break
            time.sleep(0.5)
            missing = self._missing(missing)
        if missing:
            self._compute_batches(self._plan_batches(missing))
        self.used.update(view.used)
        results, columns = self._results, view.columns

        def lookup(spec: RequestSpec, image_id: str) -> ScoreResult | None:
            column = columns.get(plain(spec))
            item = None if column is None else column.by_image.get(image_id)
            return None if item is None else results.get(item.key)

        return lookup

    def score_rows(self) -> list[dict[str, Any]]:
        """``scores.csv`` rows for every request a cell of this process used (repeat copies left out)."""
        return rows.score_rows(self.used, self._results)

    def result_errors(self) -> list[dict[str, str]]:
        """Error records of the used requests that failed or did not parse (see ``rows``)."""
        return rows.result_errors(self.used, self._results)

    def provenance(self) -> dict[str, Any]:
        """Per model: identity and the judge's own provenance (only for judges that loaded)."""
        return self.models.provenance()

    def close(self) -> None:
        self.models.close()
        self.store.close()


class _Column(NamedTuple):
    """One request of one model over a dataset's images: its items and image id -> item."""

    items: list[WorkItem]
    by_image: dict[str, WorkItem | None]


class _View(NamedTuple):
    """What serving one cell takes: its items, as key -> item, and its columns by plain request."""

    items: list[WorkItem]
    used: dict[str, WorkItem]
    columns: dict[RequestSpec, _Column]


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req", file=sys.stderr, leave=False, dynamic_ncols=True)
