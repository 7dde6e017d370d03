"""Scoring path on each tiny checkpoint: ``expected`` vs ``generate``, batched vs batch-of-one.

    python -m benchmarks.bench_scoring [--repeats 3] [--images 16] [--models tiny-llava,...] [--json out.json]

Each checkpoint is loaded through ``TransformersJudge`` (the real path: processor, chat template,
left-padded batched forward passes) on the CPU, once per method, and scores the same embedded
sample images (the first ``--images`` of ``samples``, all datasets mixed) with the ``base`` prompt.
In each repeat, back to back on the same judge objects (models loaded and warmed up before):

- ``expected`` batched (``--batch`` images per forward pass, default 16);
- ``expected`` batch-of-one;
- ``generate`` batched, greedy, capped at 8 new tokens, and at the published 200.

Honest generation: random-weight tiny models may emit EOS at once, which would make ``generate``
look as cheap as one forward pass. The benchmark sets ``generation_config.min_new_tokens`` equal
to the cap on the loaded model (so EOS is suppressed until the cap: exactly 8 / 200 new tokens per
image) and checks the count on every ``generate`` output (``new_tokens`` in the row note).

Rows (ratio of throughputs = ratio of times, per repeat, median / min / max over repeats):
``expected`` vs ``generate`` as the paper runs it (greedy, the published cap of 200 new tokens;
goal >= 3x), ``expected`` vs ``generate``-8 (info: bounded by the processor on tiny models, see
benchmarks/README.md), batched vs batch-of-one (info).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from .common import emit, make_row

TINY = ("tiny-llava", "tiny-qwen2vl", "tiny-qwen2_5vl", "tiny-internvl", "tiny-gemma3", "tiny-idefics3")
#: the paper protocol's generation: greedy, up to 200 new tokens (``profiles.PAPER["max_new_tokens"]``)
PAPER_CAP = 200
GOAL_EXPECTED_VS_PAPER = 3.0


def _requests(n: int):
    from miqa_checks.data import load_all
    from miqa_checks.prompts import build_prompt
    from miqa_checks.records import RequestMeta, ScoreRequest

    records = [r for ds in load_all(["samples"], max_images=None, seed=0) for r in ds.records]
    records = sorted(records, key=lambda r: (r.dataset, r.image_id))
    # spread over the datasets: every k-th image, so grey and RGB, small and large are mixed
    step = max(1, len(records) // n)
    chosen = records[::step][:n]
    return [
        ScoreRequest(image=r.image, prompt=build_prompt(r.modality, "base"), meta=RequestMeta(r.dataset, r.modality, r.image_id))
        for r in chosen
    ]


def _judge(spec: str, method: str, batch: int, cap: int, home: Path):
    from miqa_checks.judges.base import JudgeSettings
    from miqa_checks.judges.transformers_judge import TransformersJudge

    judge = TransformersJudge(spec, JudgeSettings(method=method, device="cpu", batch_size=batch, max_new_tokens=cap, home=home))
    judge._load()
    counts: list[int] = []
    if method == "generate":
        model = judge._model
        model.generation_config.min_new_tokens = cap  # force honest generation (no early EOS)
        original = model.generate

        def generate(*args, **kwargs):
            out = original(*args, **kwargs)
            counts.append(int(out.shape[1] - kwargs["input_ids"].shape[1]))
            return out

        model.generate = generate
    return judge, counts


def _time(judge, requests) -> float:
    start = time.perf_counter()
    results = judge.score(requests)
    elapsed = time.perf_counter() - start
    bad = [r.error for r in results if r.error]
    if bad:
        raise RuntimeError(f"{judge.spec}: scoring failed: {bad[0]}")
    return elapsed


def measure(spec: str, requests, *, repeats: int, batch: int, home: Path, caps: Sequence[int] = (8, 200)) -> dict[str, Any]:
    """Per-repeat seconds for each variant of one checkpoint, plus the generated-token counts."""
    import torch

    torch.manual_seed(0)
    exp_b, _ = _judge(spec, "expected", batch, 8, home)
    exp_1, _ = _judge(spec, "expected", 1, 8, home)
    gens = {cap: _judge(spec, "generate", batch, cap, home) for cap in caps}
    # warm-up: one untimed pass of each (allocator, kernels, processor caches)
    for judge in (exp_b, exp_1, *(g for g, _ in gens.values())):
        judge.score(requests[: min(len(requests), batch)])
    for _, counts in gens.values():
        counts.clear()
    times: dict[str, list[float]] = {"expected": [], "expected_b1": [], **{f"generate{c}": [] for c in caps}}
    for _ in range(repeats):
        times["expected"].append(_time(exp_b, requests))
        times["expected_b1"].append(_time(exp_1, requests))
        for cap, (judge, _) in gens.items():
            times[f"generate{cap}"].append(_time(judge, requests))
    new_tokens = {cap: sorted(set(counts)) for cap, (_, counts) in gens.items()}
    for cap, seen in new_tokens.items():
        if seen != [cap]:
            raise RuntimeError(f"{spec}: generate capped at {cap} produced {seen} new tokens; generation was not honest")
    for judge in (exp_b, exp_1, *(g for g, _ in gens.values())):
        judge.close()
    return {"times": times, "new_tokens": new_tokens}


def rows_for(spec: str, m: dict[str, Any], n_images: int, batch: int) -> list[dict]:
    t = m["times"]
    rows = []

    def thr(key: str) -> float:
        from statistics import median

        return n_images / median(t[key])

    for cap in sorted(m["new_tokens"]):
        gen = t[f"generate{cap}"]
        goal = (">=", GOAL_EXPECTED_VS_PAPER) if cap == PAPER_CAP else (None, None)
        case = f"{spec}: expected vs generate as the paper runs it ({cap} new tokens)" if cap == PAPER_CAP else f"{spec}: expected vs generate-{cap}"
        rows.append(
            make_row(
                "scoring", case,
                baseline=f"generate, greedy, {cap} new tokens (batch {batch})", candidate=f"expected (batch {batch})",
                baseline_s=gen, candidate_s=t["expected"], values=[g / e for g, e in zip(gen, t["expected"])],
                goal_op=goal[0], goal_value=goal[1],
                note=f"{n_images} images; expected {thr('expected'):.1f} img/s, generate-{cap} {thr(f'generate{cap}'):.1f} img/s; "
                f"new tokens per image {m['new_tokens'][cap]} (min_new_tokens = cap)",
            )
        )
    rows.append(
        make_row(
            "scoring", f"{spec}: batched vs batch-of-one",
            baseline="expected, batch 1", candidate=f"expected, batch {batch}",
            baseline_s=t["expected_b1"], candidate_s=t["expected"],
            values=[b1 / b for b1, b in zip(t["expected_b1"], t["expected"])],
            note=f"{n_images} images; batch-of-one {thr('expected_b1'):.1f} img/s",
        )
    )
    return rows


def run(models: Sequence[str] = TINY, *, repeats: int = 3, images: int = 16, batch: int = 16,
        home: Path | None = None, caps: Sequence[int] = (8, 200)) -> list[dict]:
    home = home or Path(".miqa_cache")
    requests = _requests(images)
    rows = []
    for spec in models:
        m = measure(spec, requests, repeats=repeats, batch=batch, home=home, caps=caps)
        rows += rows_for(spec, m, len(requests), batch)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", default=",".join(TINY))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return emit(run(args.models.split(","), repeats=args.repeats, images=args.images, batch=args.batch), args.json)


if __name__ == "__main__":
    main()
