"""A pytest plugin the benchmarks load (``-p benchmarks.probe``) to see inside an audit run.

It wraps methods of ``TransformersJudge`` with timers and counters (nothing else changes) and
writes one JSON file per process into the folder named by ``$MIQA_BENCH_PROBE``:

- ``model_s``: time inside the model's own calls: the forward pass (``_forward``), greedy
  decoding (``_generate``) and the vision-tower call for embeddings (``_image_embeddings``);
- ``processor_s``: the processor (chat template, image resize / normalise, tokenise: ``_inputs``);
- ``load_s`` / ``model_loads``: weight loading (``_load`` calls that actually loaded a model);
- ``score_s``: the whole ``score`` call (processor + model + result conversion);
- ``torch_at_collection``: whether ``torch`` was in ``sys.modules`` when collection finished;
- ``torch_at_end``: the same at the end of the session.

Parts of an audit run, for the warm floor's breakdown (seconds since the probe loaded, or inside):

- ``configure_s``: interpreter, pytest and plugin start-up until ``pytest_configure``;
- ``collection_done_s``: ... until collection finished;
- ``engine_s``: ``Engine.prepare`` (plan, keys, store look-ups, computing what is missing), of which
  ``data_s`` choosing the images (``Images.load``: decoding those the image index lacks);
- ``finish_s``: writing the reports (``runtime.finish_session``), of which ``plots_s`` the plots;
- ``session_s``: until the session ended;
- ``sim_calls`` / ``sim_score_s``: batches a simulated judge scored, and the time inside its
  ``score`` (with ``latency_ms``, the stand-in device time).

Benchmark-only: not an entry point, never loaded by a normal run.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

STATS: dict[str, float] = {
    "model_s": 0.0, "processor_s": 0.0, "load_s": 0.0, "score_s": 0.0, "model_loads": 0, "model_calls": 0,
    "engine_s": 0.0, "data_s": 0.0, "finish_s": 0.0, "plots_s": 0.0, "sim_calls": 0, "sim_score_s": 0.0,
}
INFO: dict[str, object] = {}
_T0 = time.perf_counter()


def _timer(cls, name: str, key: str, count: str | None = None) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            STATS[key] += time.perf_counter() - start
            if count:
                STATS[count] += 1

    setattr(cls, name, wrapper)


def _install() -> None:
    from miqa_checks.judges.transformers_judge import TransformersJudge

    if getattr(TransformersJudge, "_miqa_probed", False):
        return
    TransformersJudge._miqa_probed = True
    _timer(TransformersJudge, "_forward", "model_s", "model_calls")
    _timer(TransformersJudge, "_generate", "model_s", "model_calls")
    _timer(TransformersJudge, "_image_embeddings", "model_s")
    _timer(TransformersJudge, "_inputs", "processor_s")
    _timer(TransformersJudge, "score", "score_s")
    original_load = TransformersJudge._load

    def load(self):
        if self._model is not None:
            return original_load(self)
        start = time.perf_counter()
        try:
            return original_load(self)
        finally:
            STATS["load_s"] += time.perf_counter() - start
            STATS["model_loads"] += int(self._model is not None)

    TransformersJudge._load = load


def _install_parts() -> None:
    from miqa_checks import report_plots, runtime
    from miqa_checks.engine import core, images
    from miqa_checks.judges.simulated import SimulatedJudge

    _timer(core.Engine, "prepare", "engine_s")
    _timer(images.Images, "load", "data_s")
    _timer_function(runtime, "finish_session", "finish_s")
    _timer_function(report_plots, "make_plots", "plots_s")
    _timer(SimulatedJudge, "score", "sim_score_s", "sim_calls")  # batches a simulated judge scored


def _timer_function(module, name: str, key: str) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            STATS[key] += time.perf_counter() - start

    setattr(module, name, wrapper)


def pytest_configure(config) -> None:
    INFO["configure_s"] = time.perf_counter() - _T0
    _install()
    _install_parts()


def pytest_collection_finish(session) -> None:
    INFO["torch_at_collection"] = "torch" in sys.modules
    INFO["transformers_at_collection"] = "transformers" in sys.modules
    INFO["items"] = len(session.items)
    INFO["collection_done_s"] = time.perf_counter() - _T0


def pytest_unconfigure(config) -> None:
    folder = os.environ.get("MIQA_BENCH_PROBE")
    if not folder:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    data = {"worker": worker, **STATS, **INFO, "torch_at_end": "torch" in sys.modules,
            "session_s": time.perf_counter() - _T0}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{worker}.json").write_text(json.dumps(data))
