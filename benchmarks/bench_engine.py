"""The engine alone, in this process: harness ceiling and overlap of preparation with a device.

    python -m benchmarks.bench_engine [--repeats 3] [--batch-size 32] [--json out.json]

Each measurement builds a fresh :class:`miqa_checks.engine.Engine` on a cold result store in a
temporary folder and times ``engine.prepare(cells)`` over the full matrix of the default audit
(every property of every embedded sample dataset; the same cells pytest plans), i.e. plan,
condition images, the judge's inputs, scoring and storing, without pytest start-up or reports.

- **Harness ceiling**: requests/s with the zero-cost simulated judge (``sim-robust``): what the
  harness alone sustains, total and per core, pipelined (the default) vs serial
  (``MIQA_PREP_WORKERS=0``).
- **Overlap**: with ``sim:latency_ms=L`` (each batch held L ms without using the CPU, as a GPU
  kernel holds a batch), L chosen so that the device alone takes about twice the preparation
  alone: wall / max(preparation alone, device alone), pipelined and serial (serial is their sum).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .common import emit, make_row, tempdir

ENV = "MIQA_PREP_WORKERS"


@contextmanager
def _env(value: str | None) -> Iterator[None]:
    old = os.environ.get(ENV)
    if value is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the pool's processes, once closed)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _engine(model: str, folder: Path, *, batch_size: int, max_images: int | None) -> tuple[Any, list[Any], str]:
    """A cold engine on a store in ``folder`` and the full matrix of the samples, planned as a
    run plans it (the profile's corruption sets); also the first dataset's id."""
    from miqa_checks.config import resolve_settings
    from miqa_checks.data import resolve_source
    from miqa_checks.engine import Engine
    from miqa_checks.engine.store import ResultStore
    from miqa_checks.matrix import plan_cells

    cli: dict[str, Any] = {"model": [model], "cache": str(folder), "batch_size": batch_size}
    if max_images:
        cli["max_images"] = max_images
    settings = resolve_settings(cli)
    datasets = [pair for spec in settings.data for pair in resolve_source(spec).dataset_names()]
    cells = plan_cells(settings.models, datasets, with_baseline=False,
                       corruption_sets=settings["corruption_sets"], mapping=settings["corruption_mapping"])
    return Engine(settings, store=ResultStore(folder, "bench"), progress=False), cells, datasets[0][0]


def timed_prepare(model: str, *, batch_size: int, max_images: int | None, prep: str | None) -> dict[str, Any]:
    """One cold engine run over the full matrix: wall seconds, requests inferred, batches, mode."""
    folder = tempdir("engine")
    try:
        engine, cells, first = _engine(model, folder, batch_size=batch_size, max_images=max_images)
        engine.image_ids(first)  # data loading is not the harness's per-request cost
        with _env(prep):
            cpu0 = _cpu_s()
            start = time.perf_counter()
            engine.prepare(cells)
            wall = time.perf_counter() - start
            cpu = _cpu_s() - cpu0
        batches = len(engine._plan_batches(engine.plan(cells)))
        out = {"wall_s": wall, "cpu_s": cpu, "inferred": engine.inferred, "batches": batches, "mode": engine.preparation}
        engine.close()
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plan_size(model: str, batch_size: int, max_images: int | None = None) -> tuple[int, int]:
    """(requests, batches) of the full matrix of the samples for ``model`` (nothing computed)."""
    folder = tempdir("plan")
    try:
        engine, cells, _ = _engine(model, folder, batch_size=batch_size, max_images=max_images)
        items = engine.plan(cells)
        batches = len(engine._plan_batches(items))
        engine.close()
        return len(items), batches
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(repeats: int = 3, batch_size: int = 32, max_images: int | None = None) -> list[dict[str, Any]]:
    n_cores = cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    piped, serial, procs = [], [], []
    for _ in range(repeats):
        piped.append(timed_prepare("sim-robust", batch_size=batch_size, max_images=max_images, prep=None))
        serial.append(timed_prepare("sim-robust", batch_size=batch_size, max_images=max_images, prep="0"))
        procs.append(timed_prepare("sim-robust", batch_size=batch_size, max_images=max_images, prep=str(n_cores)))
    n = piped[0]["inferred"]
    rate = [r["inferred"] / r["wall_s"] for r in piped]
    rate_serial = [r["inferred"] / r["wall_s"] for r in serial]
    rows = [
        make_row("engine", f"harness ceiling, total ({n_cores} cores)", baseline="-", candidate=f"pipelined ({piped[0]['mode']})",
                 baseline_s=None, candidate_s=[r["wall_s"] for r in piped], values=rate, unit="req/s", goal_op=">=",
                 goal_value=1000.0, note=f"sim-robust, full matrix of the samples, {n} requests, batch {batch_size}, cold store; "
                 f"load average {load:.1f} at start"),
        make_row("engine", "harness ceiling, per core", baseline="-", candidate=f"pipelined ({piped[0]['mode']})",
                 baseline_s=None, candidate_s=None, values=[r["inferred"] / r["cpu_s"] for r in piped], unit="req/s",
                 note="requests per CPU second (this process and its pool), which contention does not change; "
                 f"{n_cores} uncontended cores would give {n_cores} x this"),
        make_row("engine", "harness ceiling, serial (one process, no pool)", baseline="-", candidate="MIQA_PREP_WORKERS=0",
                 baseline_s=None, candidate_s=[r["wall_s"] for r in serial], values=rate_serial, unit="req/s",
                 note="the pre-pipeline engine's way of working, for comparison"),
        make_row("engine", f"harness ceiling, {n_cores} preparation processes", baseline="-",
                 candidate=f"MIQA_PREP_WORKERS={n_cores}", baseline_s=None, candidate_s=[r["wall_s"] for r in procs],
                 values=[r["inferred"] / r["wall_s"] for r in procs], unit="req/s",
                 note=f"requests per CPU second {statistics.median(r['inferred'] / r['cpu_s'] for r in procs):.0f} "
                 "(start-up of the pool and pickling included)"),
        make_row("engine", "pipelined vs serial, zero-latency judge", baseline="serial", candidate="pipelined",
                 baseline_s=[r["wall_s"] for r in serial], candidate_s=[r["wall_s"] for r in piped],
                 values=[s["wall_s"] / p["wall_s"] for s, p in zip(serial, piped)], note="speed-up of the harness alone"),
    ]
    # overlap: a device-bound judge, about twice the preparation time on the device
    prep_alone = statistics.median(r["wall_s"] for r in piped)
    batches = piped[0]["batches"]
    latency_ms = max(1.0, round(2000.0 * prep_alone / batches, 1))
    device_alone = batches * latency_ms / 1000.0
    model = f"sim:latency_ms={latency_ms}"
    over, over_serial = [], []
    for _ in range(repeats):
        over.append(timed_prepare(model, batch_size=batch_size, max_images=max_images, prep=None))
        over_serial.append(timed_prepare(model, batch_size=batch_size, max_images=max_images, prep="0"))
    bound = max(prep_alone, device_alone)
    rows += [
        make_row("engine", "overlap: wall / max(preparation alone, device alone)", baseline="max(prep, device)",
                 candidate=f"pipelined ({over[0]['mode']})", baseline_s=[bound], candidate_s=[r["wall_s"] for r in over],
                 values=[r["wall_s"] / bound for r in over], goal_op="<=", goal_value=1.15,
                 note=f"{model}, {batches} batches of {batch_size}: device alone {device_alone:.2f} s, preparation alone "
                 f"{prep_alone:.2f} s (zero-latency run above), sum {device_alone + prep_alone:.2f} s"),
        make_row("engine", "overlap, serial: wall / max(preparation alone, device alone)", baseline="max(prep, device)",
                 candidate="MIQA_PREP_WORKERS=0", baseline_s=[bound], candidate_s=[r["wall_s"] for r in over_serial],
                 values=[r["wall_s"] / bound for r in over_serial],
                 note=f"without the pipeline the wall is about the sum ({(device_alone + prep_alone) / bound:.2f} x the max)"),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    emit(run(args.repeats, args.batch_size, args.max_images), args.json)


if __name__ == "__main__":
    main()
