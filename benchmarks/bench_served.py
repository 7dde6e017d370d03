"""A served model: the OpenAI-compatible judge against a local test server with a fixed service time.

    python -m benchmarks.bench_served [--repeats 3] [--service-ms 50] [--json out.json]

The server (``selftests/stub_openai.py``, in its own process on 127.0.0.1) holds every chat answer
``--service-ms`` without using the CPU, like a GPU server with free capacity; with ``capacity``
it answers 429 above that many requests in service, like an overloaded one. The client is
:class:`miqa_checks.judges.openai_judge.OpenAIJudge` scoring 224 x 224 RGB sample images with the
paper protocol (``generate``), images encoded ahead as the engine's preparation pool does.

Rows: throughput vs ``MIQA_OPENAI_CONCURRENCY`` (1, 4, 16, 64) as requests/s and as a share of the
ideal ``concurrency / service time``; the client's own ceiling (service time 0, concurrency 64)
with the CPU time per request of the client (this process, ``getrusage``) and of the test server
(its process, ``/proc/<pid>/stat``; Linux only); an overloaded server (capacity 16, cap 64): the
adaptive limit backs off to the capacity.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .common import REPO, emit, make_row

CONCURRENCIES = (1, 4, 16, 64)

_SERVER = """
import sys
sys.path.insert(0, {selftests!r})
from stub_openai import StubServer
stub = StubServer(service_s={service_s}, capacity={capacity}).start()
print(stub.port, flush=True)
sys.stdin.read()
print(stub.peak_in_service, stub.refused, flush=True)
"""


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of process ``pid`` (Linux ``/proc``; nan elsewhere)."""
    if pid is None:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return float("nan")


@contextmanager
def served(service_s: float, capacity: int = 0) -> Iterator[tuple[str, subprocess.Popen]]:
    """The test server in its own process; yields its base URL."""
    code = _SERVER.format(selftests=str(REPO / "selftests"), service_s=service_s, capacity=capacity)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


def requests_for(n: int) -> list[Any]:
    """``n`` requests on 224 x 224 RGB sample images, their PNG data URLs made ahead."""
    import numpy as np

    from miqa_checks.data import load_all
    from miqa_checks.judges.openai_judge import OpenAIJudge
    from miqa_checks.records import RequestMeta, ScoreRequest

    from .bench_corruptions import as_rgb224

    images = as_rgb224([r.image for d in load_all(["samples"], max_images=None, seed=0) for r in d.records][:16])
    prepare = getattr(OpenAIJudge, "prepare_input", None)
    encoded = [prepare(im) if prepare else None for im in images]
    return [
        ScoreRequest(image=images[i % len(images)], prompt=f"Rate the quality of this image ({i}).",
                     meta=RequestMeta("bench", "CT", f"img{i}"), judge_input=encoded[i % len(images)])
        for i in range(n)
    ]


def throughput(url: str, concurrency: int, n: int, server_pid: int | None = None) -> tuple[float, dict[str, Any]]:
    """Requests/s of one ``score`` call over ``n`` requests at this concurrency cap; ``info`` has the
    judge's counts, its limit at the end and the CPU ms per request of this process (``client_ms``)
    and of the server process (``server_ms``, when ``server_pid`` is given)."""
    from miqa_checks.judges.base import JudgeSettings
    from miqa_checks.judges.openai_judge import OpenAIJudge

    os.environ["MIQA_OPENAI_CONCURRENCY"] = str(concurrency)
    judge = OpenAIJudge(f"openai:{url}#stub-vlm", JudgeSettings(method="generate", max_new_tokens=8))
    judge.identity()  # probe the server once, outside the timing
    reqs = requests_for(n)
    cpu0, server0 = cpu_s(), cpu_s(server_pid) if server_pid else float("nan")
    start = time.perf_counter()
    results = judge.score(reqs)
    wall = time.perf_counter() - start
    client_ms = (cpu_s() - cpu0) / n * 1000
    server_ms = ((cpu_s(server_pid) if server_pid else float("nan")) - server0) / n * 1000
    bad = sum(r.error is not None for r in results)
    if bad:
        raise RuntimeError(f"{bad} of {n} requests failed: {results[0].error}")
    info = {**judge.stats(), "limit": getattr(getattr(judge, "_limit", None), "limit", concurrency),
            "client_ms": client_ms, "server_ms": server_ms}
    judge.close()
    return n / wall, info


def run(repeats: int = 3, service_ms: float = 50.0, quick: bool = False) -> list[dict[str, Any]]:
    """``quick``: concurrency 1 and 4 and few requests (checks the harness; numbers mean little)."""
    service = service_ms / 1000.0
    levels = CONCURRENCIES[:2] if quick else CONCURRENCIES
    ceiling_n, overload_n = (128, 96) if quick else (1024, 1600)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    old = os.environ.get("MIQA_OPENAI_CONCURRENCY")
    try:
        with served(service) as (url, _):
            for c in levels:
                n = max(40, 8 * c)
                rates = [throughput(url, c, n)[0] for _ in range(repeats)]
                ideal = c / service
                rows.append(make_row("served", f"concurrency {c}: requests/s", baseline=f"ideal {ideal:.0f} req/s",
                                     candidate="openai judge", baseline_s=None, candidate_s=None, values=rates,
                                     unit="req/s", note=f"{n} requests, service {service_ms:g} ms, no CPU; load {load:.1f}"))
                rows.append(make_row("served", f"concurrency {c}: share of ideal", baseline=f"{c} / {service_ms:g} ms",
                                     candidate="openai judge", baseline_s=None, candidate_s=None,
                                     values=[r / ideal for r in rates], unit="%", goal_op=">=", goal_value=0.8,
                                     note="a share well below 100 % at high concurrency is the client's ceiling"))
        with served(0.0) as (url, proc):
            runs = [throughput(url, 64, ceiling_n, proc.pid) for _ in range(repeats)]
            rows.append(make_row("served", "client ceiling (service 0 ms, concurrency 64)", baseline="-",
                                 candidate="openai judge", baseline_s=None, candidate_s=None, values=[r for r, _ in runs],
                                 unit="req/s", note=f"{ceiling_n} requests; the server (one process) shares the machine's cores; load {load:.1f}"))
            for key, who in (("client_ms", "client (this process)"), ("server_ms", "test server (its process)")):
                rows.append(make_row("served", f"CPU per request at the ceiling: {who}", baseline="-", candidate="openai judge",
                                     baseline_s=None, candidate_s=None, values=[i[key] for _, i in runs], unit="ms",
                                     note="user + system CPU time / requests"))
        with served(service, capacity=16) as (url, proc):
            runs = [throughput(url, 64, overload_n) for _ in range(repeats)]
            ideal = 16 / service
            rows.append(make_row("served", "overloaded server (capacity 16, cap 64): share of capacity", baseline=f"16 / {service_ms:g} ms",
                                 candidate="adaptive concurrency", baseline_s=None, candidate_s=None,
                                 values=[r / ideal for r, _ in runs], unit="%", goal_op=">=", goal_value=0.7,
                                 note=f"{overload_n} requests; 429 above 16 in service; retries {[i['retries'] for _, i in runs]}, "
                                 f"limit at the end {[i['limit'] for _, i in runs]}; every request answered"))
    finally:
        if old is None:
            os.environ.pop("MIQA_OPENAI_CONCURRENCY", None)
        else:
            os.environ["MIQA_OPENAI_CONCURRENCY"] = old
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    emit(run(args.repeats, args.service_ms), args.json)


if __name__ == "__main__":
    main()
