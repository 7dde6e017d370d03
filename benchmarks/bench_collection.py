"""Collection at the published scale: 16 model specs x 7 MediMeta-C datasets, full default matrix.

    python -m benchmarks.bench_collection [--repeats 3] [--models 16] [--json out.json]

A synthetic MediMeta-C root is written to a temporary folder with the 7 published dataset ids
(``aml, pbc, fundus, mammo_calc, mammo_mass, oct, pneumonia``; ``<root>/<dataset>/test/clean.npz``
holding ``images`` uint8 N x 224 x 224 x 3 and ``labels``). The models are ``sim:seed=1`` ..
``sim:seed=16`` (valid specs; collection never loads a model). Each repeat, back to back:

- ``pytest tests --collect-only -q --miqa-model ... --miqa-data <root>`` (the audit suite);
- plain pytest (``-p no:miqa``) collecting as many trivial parametrised tests
  (``@pytest.mark.parametrize("i", range(N))`` on one empty test) from a temporary file.

Ratio = audit / plain (goal <= 2x). A separate untimed run with the benchmark probe plugin
records whether ``torch`` (and ``transformers``) were in ``sys.modules`` when collection finished.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .common import check_ran, emit, make_row, tempdir, timed_pytest

GOAL_RATIO = 2.0
DATASETS = ("aml", "pbc", "fundus", "mammo_calc", "mammo_mass", "oct", "pneumonia")
GREY = {"mammo_calc", "mammo_mass", "oct", "pneumonia"}


def build_root(root: Path, images: int = 4, seed: int = 0) -> Path:
    """A synthetic MediMeta-C root with the 7 published dataset ids."""
    rng = np.random.default_rng(seed)
    for name in DATASETS:
        folder = root / name / "test"
        folder.mkdir(parents=True, exist_ok=True)
        if name in GREY:
            grey = rng.integers(0, 256, (images, 224, 224), dtype=np.uint8)
            arr = np.repeat(grey[..., None], 3, axis=-1)
        else:
            arr = rng.integers(0, 256, (images, 224, 224, 3), dtype=np.uint8)
        np.savez(folder / "clean.npz", images=arr, labels=np.arange(images))
    return root


def _count(tail: str) -> int:
    m = re.search(r"(\d+) tests? collected", tail) or re.search(r"collected (\d+) items?", tail)
    if not m:
        raise RuntimeError(f"could not read the number of collected tests from:\n{tail[-1000:]}")
    return int(m.group(1))


def measure(repeats: int, models: int = 16) -> dict[str, Any]:
    tmp = tempdir("collect")
    try:
        root = build_root(tmp / "medimeta_c")
        model_args = [a for k in range(1, models + 1) for a in ("--miqa-model", f"sim:seed={k}")]
        audit = ["tests", "--collect-only", "-q", *model_args, "--miqa-data", str(root),
                 "--miqa-report-dir", str(tmp / "reports"), "--miqa-cache", str(tmp / "cache")]
        probe = timed_pytest(audit, probe=tmp / "probe")
        check_ran(probe, "audit collection (probe)", ok=(0,))
        n = _count(probe["tail"])
        plain_dir = tmp / "plain"
        plain_dir.mkdir()
        (plain_dir / "test_plain.py").write_text(
            f"import pytest\n\n\n@pytest.mark.parametrize('i', range({n}))\ndef test_trivial(i):\n    pass\n"
        )
        (plain_dir / "pytest.ini").write_text("[pytest]\n")
        plain = ["--collect-only", "-q", "-p", "no:miqa", "--rootdir", str(plain_dir), str(plain_dir)]
        t_audit, t_plain = [], []
        for _ in range(repeats):
            a = timed_pytest(audit)
            check_ran(a, "audit collection", ok=(0,))
            p = timed_pytest(plain, cwd=plain_dir)
            check_ran(p, "plain collection", ok=(0,))
            if _count(p["tail"]) != n:
                raise RuntimeError("plain pytest collected a different number of tests")
            t_audit.append(a["wall_s"])
            t_plain.append(p["wall_s"])
        return {"items": n, "audit": t_audit, "plain": t_plain, "probe": probe["probe"], "models": models}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rows_from(m: dict[str, Any]) -> list[dict]:
    p = m["probe"][0]
    torch_loaded = any(x.get("torch_at_collection") for x in m["probe"])
    return [
        make_row("collection", f"{m['models']} models x {len(DATASETS)} datasets: --collect-only",
                 baseline=f"plain pytest, {m['items']} trivial parametrised tests", candidate=f"audit suite, {m['items']} cells",
                 baseline_s=m["plain"], candidate_s=m["audit"], values=[a / p for a, p in zip(m["audit"], m["plain"])],
                 goal_op="<=", goal_value=GOAL_RATIO,
                 note=f"torch imported during collection: {'YES' if torch_loaded else 'no'}; "
                 f"transformers: {'yes' if p.get('transformers_at_collection') else 'no'}"),
        make_row("collection", "torch not imported during collection", baseline="-", candidate="'torch' not in sys.modules",
                 baseline_s=None, candidate_s=None, values=[0.0 if torch_loaded else 1.0], unit="bool", goal_op=">=", goal_value=1.0,
                 note="checked by the probe plugin's pytest_collection_finish hook"),
    ]


def run(repeats: int = 3, models: int = 16) -> list[dict]:
    return rows_from(measure(repeats, models))


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return emit(run(args.repeats, args.models), args.json)


if __name__ == "__main__":
    main()
