"""``reports/bench.json`` and ``reports/bench.md`` from benchmark rows (see ``benchmarks.common``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .common import fmt_seconds, fmt_value

TITLES = {
    "corruptions": "1. Corruptions: miqa_checks.corruptions vs imagecorruptions (all 5 severities, embedded images)",
    "corruptions_rgb224": "1b. Corruptions on 224 x 224 RGB (MediMeta-C's format) vs imagecorruptions",
    "medical_corruptions": "1c. Medical corruptions (MedMNIST-C set) vs medmnistc: speed, fidelity in the notes",
    "scoring": "2. Scoring path on the tiny checkpoints (CPU): `expected` vs the paper's `generate`",
    "engine": "3. Engine: harness ceiling (zero-latency judge) and overlap with a device-bound judge",
    "served": "4. Served model: OpenAI judge vs a local server with a fixed service time",
    "cache": "5. Warm reruns: the default audit cold vs warm, and the warm floor by part",
    "xdist": "6. Parallelism: `-n 2` vs one process on a device-bound judge",
    "collection": "7. Collection at the published scale (`--collect-only`) vs plain pytest",
    "gpu": "8. GPU: model alone and whole pipeline vs the FLOP bound",
    "gpu_smoke": "8. GPU throughput script, `--smoke` on CPU (tiny shapes; checks the script and the pipeline, not the GPU)",
}


def _met(row: dict[str, Any]) -> str:
    return "info" if row["met"] is None else ("**yes**" if row["met"] else "**NO**")


def format_markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    lines: list[str] = ["# miqa-checks benchmarks", ""]
    if meta:
        lines.append(" | ".join(f"{k}: {v}" for k, v in meta.items()))
        lines.append("")
    goals = [r for r in rows if r["met"] is not None]
    lines.append(f"Goals met: {sum(r['met'] for r in goals)} of {len(goals)} rows with a goal "
                 "(value = median over repeats of the per-repeat measure; min / max over repeats).")
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        lines += ["", f"## {TITLES.get(bench, bench)}", ""]
        lines.append("| case | baseline | candidate | baseline s | candidate s | value | min | max | n | goal | met | note |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r["benchmark"] == bench):
            note = str(r.get("note", "")).replace("|", "/").replace("\n", " ")
            lines.append(
                f"| {r['case']} | {r['baseline']} | {r['candidate']} | {fmt_seconds(r['baseline_s'])} | "
                f"{fmt_seconds(r['candidate_s'])} | {fmt_value(r, 'value')} | {fmt_value(r, 'min')} | "
                f"{fmt_value(r, 'max')} | {r['repeats']} | {r['goal']} | {_met(r)} | {note} |"
            )
    return "\n".join(lines) + "\n"


def write(rows: Sequence[dict[str, Any]], folder: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jpath, mpath = folder / "bench.json", folder / "bench.md"
    jpath.write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=2, default=str) + "\n")
    mpath.write_text(format_markdown(rows, meta))
    return jpath, mpath
