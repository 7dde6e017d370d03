"""One pytester run per command-line option (syrupy's habit): in a fresh project with the installed
plugin and one small ``@audit`` test, each option reaches the settings (``run.json``'s
``settings_from`` says "command line") and has its documented effect. Subprocess runs: the audit
imports numpy and scipy, which cannot be imported twice in one process.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from miqa_checks.plugin import _OPTIONS

pytest_plugins = ["pytester"]

PROJECT_TEST = '''
from miqa_checks import CLEAN, audit, once, request


@audit(cells=once, requests=[CLEAN, request(repeat=1)], tolerance=0.001, why="one deterministic cell per dataset")
def test_same_twice(miqa):
    first, again = miqa.requests
    miqa.assert_repeatable(first, again, tolerance=miqa.tolerance)
'''


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _images_per_dataset(report: Path) -> set[int]:
    per: dict[str, set[str]] = {}
    for row in _csv(report / "scores.csv"):
        per.setdefault(row["dataset"], set()).add(row["image_id"])
    return {len(v) for v in per.values()}


def _png_folder(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _baseline(path: Path) -> Path:
    rows = ["model,dataset,image_id,condition,prompt_id,score,parse_ok,raw_text"]
    rows += [f"old,samples_ct,x{i},clean,base,3,true," for i in range(3)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _config(path: Path) -> Path:
    path.write_text("seed = 11\n")
    return path


#: flag -> (extra args given the project folder, check(report dir, run.json, result, project folder))
CASES = {
    "--miqa-model": (lambda p: ["--miqa-model=lab=sim-robust"],
                     lambda r, info, res, p: [m["label"] for m in info["models"]] == ["lab"]),
    "--miqa-data": (lambda p: [f"--miqa-data={_png_folder(p / 'scans')}"],
                    lambda r, info, res, p: {row["dataset"] for row in _csv(r / "matrix.csv")} == {"scans"}),
    "--miqa-max-images": (lambda p: ["--miqa-max-images=3"], lambda r, info, res, p: _images_per_dataset(r) == {3}),
    "--miqa-config": (lambda p: [f"--miqa-config={_config(p / 'miqa.toml')}"],
                      lambda r, info, res, p: info["seed"] == 11),
    "--miqa-profile": (lambda p: ["--miqa-profile=paper"],
                       lambda r, info, res, p: info["profile"] == "paper"),
    "--miqa-baseline": (lambda p: [f"--miqa-baseline={_baseline(p / 'base.csv')}"],
                        lambda r, info, res, p: info["settings_from"].get("baseline") == "command line"),
    "--miqa-report-dir": (lambda p: [],  # every run here sets it; the reports are there
                          lambda r, info, res, p: (r / "matrix.csv").is_file() and not (p / "reports").exists()),
    "--miqa-cache": (lambda p: [],  # every run here sets it
                     lambda r, info, res, p: any((p / "cache").iterdir())),
    "--miqa-no-cache": (lambda p: ["--miqa-no-cache"],
                        lambda r, info, res, p: not (p / "cache").exists()),
    "--miqa-device": (lambda p: ["--miqa-device=cpu"], lambda r, info, res, p: info["device"] == "cpu"),
    "--miqa-batch-size": (lambda p: ["--miqa-batch-size=3"], lambda r, info, res, p: info["batch_size"] == 3),
    "--miqa-seed": (lambda p: ["--miqa-seed=7"], lambda r, info, res, p: info["seed"] == 7),
    "--miqa-strict": (lambda p: ["--miqa-strict", "--miqa-max-images=2"],  # 2 images: undecided -> fails
                      lambda r, info, res, p: res.ret == 1 and {row["verdict"] for row in _csv(r / "matrix.csv")} == {"inconclusive"}),
    "--miqa-inconclusive": (lambda p: ["--miqa-inconclusive=fail", "--miqa-max-images=2"],
                            lambda r, info, res, p: res.ret == 1 and info["thresholds"]["inconclusive"] == "fail"),
    "--miqa-trust-remote-code": (lambda p: ["--miqa-trust-remote-code"],
                                 lambda r, info, res, p: info["settings_from"].get("trust_remote_code") == "command line"),
}


def test_every_option_has_a_case() -> None:
    assert set(CASES) == set(_OPTIONS)


@pytest.mark.parametrize("flag", list(CASES))
def test_option(pytester: pytest.Pytester, flag: str) -> None:
    extra, check = CASES[flag]
    pytester.makepyfile(test_audit_same=PROJECT_TEST)
    args = extra(pytester.path)
    if not any(a.startswith("--miqa-model") for a in args):
        args.append("--miqa-model=sim-robust")
    if not any(a.startswith(("--miqa-data", "--miqa-max-images")) for a in args):
        args += ["-k", "samples_ct"]
    if flag != "--miqa-no-cache":
        args.append(f"--miqa-cache={pytester.path / 'cache'}")
    report = pytester.path / "out"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--miqa-report-dir={report}", *args, timeout=300)
    info = json.loads((report / "run.json").read_text())
    dest = _OPTIONS[flag][0]
    if dest not in ("config", "inconclusive"):
        assert info["settings_from"].get(dest) == "command line", info["settings_from"]
    assert check(report, info, result, pytester.path), result.stdout.str()[-3000:]
