"""End to end: the audit suite run as a user runs it, on simulated judges with planted behaviour."""

from __future__ import annotations

import re

import pytest

from audit_runner import PER_IMAGE, run_audit

SIMS = ("--miqa-model", "sim-robust", "--miqa-model", "sim-paper", PER_IMAGE)

MATRIX_COLUMNS = [
    "test_id", "property", "model", "dataset", "modality", "condition", "corruption", "severity", "attribute",
    "n", "clean_mean", "cond_mean", "delta_pct", "ci_low", "ci_high", "p_value", "threshold", "verdict",
]
SCORES_COLUMNS = ["model", "dataset", "image_id", "condition", "prompt_id", "score", "parse_ok", "raw_text"]

#: What sim-paper plants (miqa_checks/judges/simulated.py) and the cells each defect may fail.
PLANTED = {
    "pixelation -20.58 %": re.compile(r"test_corruption_stability\[sim-paper-\w+-pixelation-\d\]"),
    "institution +17.15 %": re.compile(r"test_metadata_(pair_)?invariance\[sim-paper-\w+-institution(-world_class)?\]"),
    "old device -14.7 %": re.compile(r"test_metadata_(pair_)?invariance\[sim-paper-\w+-infrastructure(-old_device)?\]"),
    "+31 % on corrupted samples_mr": re.compile(
        r"test_(no_inflation|corruption_stability|severity_response)\[sim-paper-samples_mr-\w+(-\d)?\]"
    ),
}


@pytest.fixture(scope="module")
def sim_audit(tmp_path_factory):
    """The default audit on the embedded samples with the two simulated judges (cold cache)."""
    return run_audit(tmp_path_factory.mktemp("sim"), *SIMS)


def test_reports_follow_the_contract(sim_audit):
    files = {p.name for p in sim_audit.report_dir.iterdir()}
    assert {"junit.xml", "matrix.csv", "scores.csv", "summary.html", "run.json", "published.csv", "errors.csv"} <= files, sim_audit.output[-3000:]
    assert list(sim_audit.matrix[0])[: len(MATRIX_COLUMNS)] == MATRIX_COLUMNS
    assert list(sim_audit.scores[0])[: len(SCORES_COLUMNS)] == SCORES_COLUMNS
    assert {r["verdict"] for r in sim_audit.matrix} <= {"pass", "fail", "inconclusive", "error", "not_applicable"}
    junit = (sim_audit.report_dir / "junit.xml").read_text()
    assert junit.count("<testcase") >= len(sim_audit.matrix)
    assert '<property name="delta_pct"' in junit and '<property name="verdict"' in junit
    info = sim_audit.run_info
    assert info["profile"] == "default" and info["seed"] == 0 and info["thresholds"]["alpha"] == 0.05
    assert [m["label"] for m in info["models"]] == ["sim-robust", "sim-paper"]


def test_robust_judge_fails_nothing(sim_audit):
    verdicts = sim_audit.verdicts("sim-robust")
    assert len(verdicts) > 500
    assert [t for t, v in verdicts.items() if v in ("fail", "error")] == []
    assert sum(v == "pass" for v in verdicts.values()) > len(verdicts) / 2


def test_paper_judge_fails_exactly_its_planted_properties(sim_audit):
    failing = [t for t, v in sim_audit.verdicts("sim-paper").items() if v in ("fail", "error")]
    unexplained = [t for t in failing if not any(p.fullmatch(t) for p in PLANTED.values())]
    assert unexplained == []
    for defect, pattern in PLANTED.items():
        assert any(pattern.fullmatch(t) for t in failing), f"planted defect not caught: {defect}"
    assert sim_audit.returncode == 1  # failing tests fail the pytest run


def test_warm_rerun_infers_nothing_and_reports_the_same(sim_audit, tmp_path):
    again = run_audit(sim_audit.report_dir.parent, *SIMS, report="reports2")
    assert again.run_info["requests_inferred"] == 0
    assert again.matrix == sim_audit.matrix
    assert again.scores == sim_audit.scores


def test_k_selects_only_what_it_needs(tmp_path):
    run = run_audit(tmp_path, "--miqa-model", "sim-robust", "-k", "pixelation", "--miqa-max-images", "6")
    assert run.matrix and all("pixelation" in r["test_id"] for r in run.matrix)
    conditions = {r["condition"] for r in run.scores}
    assert conditions == {"clean", *(f"pixelation-{s}" for s in range(1, 6))}
    assert {r["prompt_id"] for r in run.scores} == {"base"}
    assert run.run_info["requests_inferred"] == len(run.scores)


def test_xdist_gives_the_same_reports_and_infers_each_request_once(tmp_path):
    args = ("--miqa-model", "sim-paper", "--miqa-max-images", "6")
    single = run_audit(tmp_path, *args, report="single", cache="c1")
    parallel = run_audit(tmp_path, *args, "-n", "2", report="parallel", cache="c2")
    assert parallel.matrix == single.matrix
    assert parallel.scores == single.scores
    assert parallel.run_info["requests_inferred"] == single.run_info["requests_inferred"]
    assert parallel.run_info["workers"] == 2


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--miqa-max-images", "0"), "max_images"),
        (("--miqa-model", "sim:pixelation=abc"), "pixelation"),
        (("--miqa-model", "tiny-nonexistent"), "tiny-nonexistent"),
        (("--miqa-model", "openai:no-url"), "openai:<base_url>#<model>"),
        (("--miqa-data", "/nonexistent/folder"), "/nonexistent/folder"),
        (("--miqa-profile", "lenient"), "profile"),
        (("--miqa-device", "gpu7"), "device"),
        (("--miqa-batch-size", "-3"), "batch_size"),
    ],
)
def test_bad_options_stop_before_any_model_loads(tmp_path, args, expected):
    run = run_audit(tmp_path, *args)
    assert run.returncode == 4, run.output[-2000:]  # pytest usage error
    assert expected in run.output
    assert not (tmp_path / "cache").exists()


def test_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "miqa.toml"
    config.write_text('profile = "strict"\nstabilty_tolerance_pct = [1, 2, 3, 4, 5]\n')
    run = run_audit(tmp_path, "--miqa-config", str(config))
    assert run.returncode == 4
    assert "stabilty_tolerance_pct" in run.output


def test_config_file_sets_thresholds_and_command_line_wins(tmp_path):
    config = tmp_path / "miqa.toml"
    config.write_text('[tool.miqa]\nprofile = "strict"\nseed = 3\nmax_images = 5\nmetadata_tolerance_pct = 7.5\n')
    run = run_audit(tmp_path, "--miqa-config", str(config), "--miqa-seed", "4", "--miqa-model", "sim-robust", "-k", "metadata and samples_ct")
    info = run.run_info
    assert info["profile"] == "strict" and info["seed"] == 4
    assert info["thresholds"]["metadata_tolerance_pct"] == 7.5 and info["thresholds"]["max_images"] == 5
    assert {r["threshold"] for r in run.matrix if r["property"] == "metadata_invariance"} == {"|delta| <= 7.5%"}


def test_upgrade_gate_with_a_baseline(tmp_path):
    """Same per-image base, a little more noise: agrees; other seed: disagrees; planted pixelation: less stable."""
    common = (PER_IMAGE, "--miqa-max-images", "37", "-k", "samples_mr")  # all 37 MR samples: agreement is per image
    base = run_audit(tmp_path, "--miqa-model", "sim-robust", *common, report="base")
    gate = ("--miqa-baseline", str(base.report_dir / "scores.csv"), *common[:-1], "baseline and samples_mr")

    def verdicts(model: str, report: str) -> dict[str, str]:
        run = run_audit(tmp_path, "--miqa-model", model, *gate, report=report)
        assert run.matrix and all(r["property"].startswith("baseline") for r in run.matrix), run.output[-3000:]
        return {r["test_id"].split("[")[0] + "[" + r["test_id"].rsplit("-", 1)[-1]: r["verdict"] for r in run.matrix}

    upgrade = verdicts("sim:noise=0.03", "upgrade")
    assert upgrade["test_baseline_agreement[samples_mr]"] == "pass"
    assert "fail" not in upgrade.values()
    other = verdicts("sim:seed=1", "other")
    assert other["test_baseline_agreement[samples_mr]"] == "fail"
    worse = verdicts("sim:pixelation=-30", "worse")
    assert worse["test_baseline_noninferiority[pixelation]"] == "fail"
    assert [k for k, v in worse.items() if v == "fail"] == ["test_baseline_noninferiority[pixelation]"]


def test_a_source_with_no_readable_image_is_a_usage_error_naming_it(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.png").write_text("not an image")
    run = run_audit(tmp_path, "--miqa-model", "sim-robust", "--miqa-data", str(folder))
    assert run.returncode == 4, run.output[-2000:]
    assert "scans" in run.output and "a.png" in run.output and "no readable image" in run.output


def test_a_baseline_of_several_models_is_a_usage_error(tmp_path):
    baseline = tmp_path / "two.csv"
    header = "model,dataset,image_id,condition,prompt_id,score,parse_ok,raw_text\n"
    baseline.write_text(header + "a,samples_ct,x,clean,base,3,true,\nb,samples_ct,x,clean,base,3,true,\n")
    run = run_audit(tmp_path, "--miqa-model", "sim-robust", "--miqa-baseline", str(baseline))
    assert run.returncode == 4, run.output[-2000:]
    assert "one model" in run.output and "two.csv" in run.output
    assert not (tmp_path / "cache").exists()  # stopped before anything loaded


def test_grouped_by_source_the_samples_cannot_decide_and_say_so(tmp_path):
    """The default unit is the group: 11 CT samples cut from 3 files are 3 units, and a planted
    -20 % pixelation is inconclusive there (with n = groups and the images beside it), not a pass."""
    run = run_audit(tmp_path, "--miqa-model", "sim-paper", "-k", "corruption_stability and samples_ct and pixelation")
    assert run.returncode == 0, run.output[-2000:]
    assert {r["verdict"] for r in run.matrix} == {"inconclusive"}
    assert all(r["n"] == "3" and "n=3 groups, 11 images" in r["reason"] for r in run.matrix), run.matrix[0]
