"""The built-in properties give the same matrix.csv as before the property API (issue 10).

The golden files are the matrix.csv of the code before the rewrite (main 39be739 with the
conditions registry's working-tree state of that moment), from ``pytest tests`` with the options
below: the default profile per image (``docs/examples/per-image.toml``: the embedded samples'
cells decide, so pass and fail are compared), the default profile grouped (nearly every cell
inconclusive: reasons and n_needed are compared), and the paper profile per image (generate +
parse; slow). Every golden row must come back with the same identifying columns, statistics,
verdict and reason; new rows are allowed only for corruptions registered since. A deliberate
change of a corruption's output (its table, seeding or version) changes its rows: regenerate then.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from audit_runner import REPO, run_audit
from miqa_checks.conditions import REGISTRY

DATA = Path(__file__).parent / "data"
ARGS = ("--miqa-model=sim-paper", "--miqa-model=tiny-llava", "--miqa-max-images=8")
PER_IMAGE = f"--miqa-config={REPO / 'docs' / 'examples' / 'per-image.toml'}"
#: Corruptions registered when the golden matrices were made.
KNOWN = set(REGISTRY.ids("imagenet_c", "medical"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("options, golden_file", [
    pytest.param((PER_IMAGE,), "golden_matrix.csv", id="default-per-image"),
    pytest.param((), "golden_matrix_grouped.csv", id="default-grouped"),
    pytest.param((PER_IMAGE, "--miqa-profile=paper"), "golden_matrix_paper.csv", id="paper-per-image",
                 marks=pytest.mark.slow),  # tiny-llava generates up to 200 tokens per request: minutes
])
def test_the_builtin_matrix_is_unchanged(tmp_path: Path, options: tuple[str, ...], golden_file: str) -> None:
    golden = _rows(DATA / golden_file)
    run = run_audit(tmp_path, *ARGS, *options)
    failing = any(r["verdict"] in ("fail", "error") for r in golden)
    assert run.returncode == (1 if failing else 0), run.output[-3000:]
    new = {r["test_id"]: r for r in run.matrix}
    columns = list(golden[0])
    compared = columns[columns.index("test_id"):columns.index("verdict") + 1] + ["reason"]
    assert list(run.matrix[0])[:len(columns)] == columns
    missing = [r["test_id"] for r in golden if r["test_id"] not in new]
    assert not missing, missing[:5]
    changed = [(r["test_id"], c, r[c], new[r["test_id"]][c]) for r in golden for c in compared
               if new[r["test_id"]][c] != r[c]]
    assert not changed, changed[:5]
    extra = [t for t in new if t not in {r["test_id"] for r in golden}]
    assert all(new[t]["corruption"] and new[t]["corruption"] not in KNOWN for t in extra), extra[:5]
