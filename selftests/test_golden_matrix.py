"""The built-in properties give the same matrix.csv as before the property API (issue 10).

The golden files are the matrix.csv of the code before the rewrite (main 39be739 with the
conditions registry's working-tree state of that moment), from ``pytest tests`` with the options
below: the default profile per image (``docs/examples/per-image.toml``: the embedded samples'
cells decide, so pass and fail are compared), the default profile grouped (nearly every cell
inconclusive: the reasons and n_needed are compared), and the paper profile per image (generate +
parse; slow). Every golden row must come back with the same identifying columns, statistics,
verdict and reason; new rows are allowed only for corruptions registered since. A deliberate
change of a corruption's output (its table, seeding or version) changes its rows: regenerate then.
"""

from __future__ import annotations

import csv
from pathlib import Path

from audit_runner import REPO, run_audit
from miqa_checks.conditions import ids

GOLDEN = Path(__file__).parent / "data" / "golden_matrix.csv"
ARGS = ("--miqa-model=sim-paper", "--miqa-model=tiny-llava", "--miqa-max-images=8")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_builtin_matrix_is_unchanged(tmp_path: Path) -> None:
    golden = _rows(GOLDEN)
    run = run_audit(tmp_path, *ARGS)
    assert run.returncode == 1, run.output[-3000:]  # sim-paper fails its planted properties
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
    seven = set(ids("imagenet_c"))
    assert all(new[t]["corruption"] and new[t]["corruption"] not in seven for t in extra), extra[:5]
