"""Self-tests of the simulated judges: spec parsing, determinism, planted effects, embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from miqa_checks import properties as P
from miqa_checks.conditions import REGISTRY
from miqa_checks.errors import MiqaUsageError
from miqa_checks.judges import load_judge
from miqa_checks.judges.base import JudgeSettings
from miqa_checks.judges.simulated import (
    CORRUPTIONS,
    KNOBS,
    PARSE_FAIL_TEXT,
    SimulatedJudge,
    level_probs,
    parse_spec,
)
from miqa_checks.prompts import build_prompt
from miqa_checks.records import RequestMeta, ScoreRequest

try:  # the real corruption module, when present
    from miqa_checks.conditions import apply as _real_apply
except Exception:  # pragma: no cover - depends on the checkout
    _real_apply = None


# --------------------------------------------------------------------------- fixtures


def _images(n=40, size=96, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2 + i % 5)
        g = (g - g.mean()) / (g.std() + 1e-9)
        img = np.clip(128 + 45 * g, 0, 255).astype(np.uint8)
        if i % 3 == 0:  # some RGB
            img = np.stack([img, np.roll(img, 3, 0), np.roll(img, 3, 1)], axis=2)
        out.append(img)
    return out


def _simple_corrupt(img: np.ndarray, name: str, sev: int, seed: int = 0) -> np.ndarray:
    """ImageNet-C-like distortions in plain numpy (a stand-in when corruptions.py is absent)."""
    rng = np.random.default_rng([seed, sev, CORRUPTIONS.index(name)])
    x = img.astype(float) / 255.0
    if name == "brightness":
        x = x + [0.1, 0.2, 0.3, 0.4, 0.5][sev - 1]
    elif name == "contrast":
        c = [0.4, 0.3, 0.2, 0.1, 0.05][sev - 1]
        x = (x - x.mean()) * c + x.mean()
    elif name == "gaussian_noise":
        x = x + rng.normal(0, [0.08, 0.12, 0.18, 0.26, 0.38][sev - 1], x.shape)
    elif name == "impulse_noise":
        amount = [0.03, 0.06, 0.09, 0.17, 0.27][sev - 1]
        m = rng.uniform(size=x.shape[:2])
        x = x.copy()
        x[m < amount / 2] = 0.0
        x[(m >= amount / 2) & (m < amount)] = 1.0
    elif name == "motion_blur":
        size = [10, 15, 15, 15, 20][sev - 1] // 2
        x = ndimage.uniform_filter1d(x, size, axis=1)
    elif name == "zoom_blur":
        s = [1, 1.5, 2, 2.5, 3][sev - 1]
        x = ndimage.gaussian_filter(x, (s, s, 0) if x.ndim == 3 else s)
    elif name == "pixelation":
        f = [0.6, 0.5, 0.4, 0.3, 0.25][sev - 1]
        h, w = x.shape[:2]
        b = max(1, int(round(1 / f)))
        x = np.repeat(np.repeat(x[::b, ::b], b, axis=0), b, axis=1)[:h, :w]
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def corrupt(img, name, sev, seed=0):
    if _real_apply is not None:
        return _real_apply(img, name, sev, seed)
    return _simple_corrupt(img, name, sev, seed)


def _requests(images, dataset="samples_ct", condition="clean", prompt_id="base", embed=False, modality="CT",
              corrupted=None):
    imgs = corrupted if corrupted is not None else images
    return [
        ScoreRequest(image=im, prompt=build_prompt(modality, prompt_id),
                     meta=RequestMeta(dataset, modality, f"img{i:03d}", condition, prompt_id), embed=embed)
        for i, im in enumerate(imgs)
    ]


def _scores(judge, reqs):
    return np.array([r.score for r in judge.score(reqs)])


# --------------------------------------------------------------------------- spec parsing


def test_presets_and_knobs():
    _, k = parse_spec("sim-robust")
    assert k["noise"] == 0.02 and k["pixelation"] == 0 and k["attr"] == {} and k["seed"] == 0
    _, k = parse_spec("sim-paper", default_seed=5)
    assert k["pixelation"] == -16.92 and k["seed"] == 5
    assert k["attr"] == {"institution-world_class": 17.15, "infrastructure-old_device": -14.7}
    assert k["inflate"]["samples_mr"] == 31
    _, k = parse_spec("sim:pixelation=-20,seed=2")
    assert k["pixelation"] == -20 and k["seed"] == 2
    _, k = parse_spec("sim:attr=institution-world_class:17.15;infrastructure-old_device:-14.7")
    assert k["attr"]["infrastructure-old_device"] == -14.7
    _, k = parse_spec("sim:noise=0.05,nondeterminism=0.05,parse_fail=0.1,inflate=samples_mr:31")
    assert (k["noise"], k["nondeterminism"], k["parse_fail"], k["inflate"]) == (0.05, 0.05, 0.1, {"samples_mr": 31})
    _, k = parse_spec("sim-paper:pixelation=0")
    assert k["pixelation"] == 0 and k["attr"]  # preset kept, one knob overridden


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("sim:pixelate=-20", "'pixelate'"),
        ("sim:pixelation=abc", "'pixelation'"),
        ("sim:noise=-1", "'noise'"),
        ("sim:parse_fail=1.5", "'parse_fail'"),
        ("sim:seed=1.5", "'seed'"),
        ("sim:attr=institution-nowhere:5", "institution-nowhere"),
        ("sim:inflate=samples_mr", "'inflate'"),
        ("sim:pixelation=-150", "'pixelation'"),
        ("sim:pixelation", "pixelation"),
        ("sim-fancy", "sim-fancy"),
        ("sim", "sim"),
    ],
)
def test_bad_specs_name_the_knob_and_list_knobs(spec, needle):
    with pytest.raises(MiqaUsageError) as err:
        SimulatedJudge(spec, JudgeSettings())
    msg = str(err.value)
    assert needle in msg
    assert all(k in msg for k in KNOBS)


def test_identity_and_provenance():
    a = SimulatedJudge("sim-robust", JudgeSettings())
    assert a.identity() == SimulatedJudge("sim:seed=0", JudgeSettings()).identity()
    assert a.identity() != SimulatedJudge("sim-robust", JudgeSettings(seed=1)).identity()
    assert a.identity() != SimulatedJudge("sim:pixelation=-1", JudgeSettings()).identity()
    assert a.identity() != SimulatedJudge("sim-robust", JudgeSettings(method="generate")).identity()
    assert "seed=0" in a.identity() and "noise=0.02" in a.identity()
    prov = a.provenance()
    assert prov["spec"] == "sim-robust" and prov["kind"] == "simulated"
    assert isinstance(load_judge("sim-paper", JudgeSettings()), SimulatedJudge)
    with pytest.raises(MiqaUsageError):
        SimulatedJudge("sim-robust", JudgeSettings(method="sample"))


# --------------------------------------------------------------------------- behaviour


def test_deterministic_order_free_and_in_range():
    imgs = _images(20)
    j1, j2 = SimulatedJudge("sim-robust", JudgeSettings()), SimulatedJudge("sim-robust", JudgeSettings())
    reqs = _requests(imgs)
    s1 = _scores(j1, reqs)
    assert np.array_equal(s1, _scores(j2, reqs[::-1])[::-1])
    assert np.array_equal(s1, _scores(j1, reqs))
    assert (s1 >= 1).all() and (s1 <= 5).all() and 2.0 < s1.mean() < 4.8
    s_other = _scores(SimulatedJudge("sim:seed=3", JudgeSettings()), reqs)
    assert not np.allclose(s1, s_other)


def test_expected_probs_and_generate_text():
    res = SimulatedJudge("sim-robust", JudgeSettings()).score(_requests(_images(10)))
    for r in res:
        p = np.array(r.probs)
        assert p.shape == (5,) and p.min() >= 0 and p.sum() == pytest.approx(1)
        assert p @ np.arange(1, 6) == pytest.approx(r.score, abs=1e-9)
        assert r.method == "expected" and r.raw_text == "" and r.parse_ok
    p = level_probs(np.array([1.0, 2.5, 5.0]))
    assert p[0, 0] == 1 and p[2, 4] == 1 and p[1] @ np.arange(1, 6) == pytest.approx(2.5)
    res = SimulatedJudge("sim-robust", JudgeSettings(method="generate")).score(_requests(_images(10)))
    for r in res:
        assert r.method == "generate" and r.score == int(r.score) and r.raw_text == f"{int(r.score)}/5"
        assert r.probs is None


def test_planted_effects_visible_in_means():
    imgs = _images(40)
    j = SimulatedJudge("sim:pixelation=-20,attr=institution-world_class:15,paraphrase=8,inflate=samples_mr:20,"
                       "noise=0.01", JudgeSettings())
    ref = _scores(j, _requests(imgs))
    pix = _scores(j, _requests(imgs, condition="pixelation-1", corrupted=[corrupt(i, "pixelation", 1) for i in imgs]))
    assert (pix.mean() / ref.mean() - 1) * 100 == pytest.approx(-20, abs=2.5)
    world = _scores(j, _requests(imgs, prompt_id="institution-world_class"))
    assert (world.mean() / ref.mean() - 1) * 100 == pytest.approx(15, abs=3)
    local = _scores(j, _requests(imgs, prompt_id="institution-local"))
    assert abs((local.mean() / ref.mean() - 1) * 100) < 1.5
    para = _scores(j, _requests(imgs, prompt_id="paraphrase-2"))
    assert (para.mean() / ref.mean() - 1) * 100 == pytest.approx(8, abs=2)
    # inflation only on the named dataset, only for corrupted images
    noisy = [corrupt(i, "gaussian_noise", 3) for i in imgs]
    mr_ref = _scores(j, _requests(imgs, dataset="samples_mr"))
    mr = _scores(j, _requests(imgs, dataset="samples_mr", condition="gaussian_noise-3", corrupted=noisy))
    ct = _scores(j, _requests(imgs, dataset="samples_ct", condition="gaussian_noise-3", corrupted=noisy))
    assert (mr.mean() / mr_ref.mean() - 1) * 100 > 8
    assert (ct.mean() / ref.mean() - 1) * 100 < 0


def test_attribute_bias_is_read_from_the_prompt_text():
    """The judge reacts to the phrase in the prompt, not to meta.prompt_id."""
    imgs = _images(10)
    j = SimulatedJudge("sim:attr=infrastructure-old_device:-30,noise=0", JudgeSettings())
    ref = _scores(j, _requests(imgs))
    lying = [ScoreRequest(image=im, prompt=build_prompt("CT", "infrastructure-old_device"),
                          meta=RequestMeta("samples_ct", "CT", f"img{i:03d}")) for i, im in enumerate(imgs)]
    assert _scores(j, lying).mean() < 0.8 * ref.mean()


def test_repeatability_and_nondeterminism():
    imgs = _images(12)
    reqs = _requests(imgs)
    repeat = [ScoreRequest(image=r.image, prompt=r.prompt,
                           meta=RequestMeta(r.meta.dataset, r.meta.modality, r.meta.image_id, repeat=1)) for r in reqs]
    j = SimulatedJudge("sim-robust", JudgeSettings())
    first = _scores(j, reqs)
    second = np.array([j.score([q])[0].score for q in repeat])
    assert P.repeatability(first, second, tolerance=1e-3).outcome == "pass"
    j = SimulatedJudge("sim:nondeterminism=0.05", JudgeSettings())
    first = _scores(j, reqs)
    second = np.array([j.score([q])[0].score for q in repeat])
    assert P.repeatability(first, second, tolerance=1e-3).outcome == "fail"


def test_parse_fail_rate():
    imgs = _images(4, size=32)
    reqs = [r for k in range(100) for r in _requests(imgs, prompt_id="base", dataset=f"d{k}")]
    res = SimulatedJudge("sim:parse_fail=0.1", JudgeSettings(method="generate")).score(reqs)
    bad = [r for r in res if not r.parse_ok]
    assert all(math.isnan(r.score) and r.raw_text == PARSE_FAIL_TEXT for r in bad)
    assert 0.06 <= len(bad) / len(res) <= 0.14  # 400 requests, SD 1.5 %
    ok = np.array([r.parse_ok for r in res])
    sc = np.array([r.score for r in res])
    v = P.output_validity(ok, sc, max_parse_failure_rate=0.05, max_out_of_range_rate=0.0, family_size=300)
    assert v.outcome == "fail"
    # the same requests fail again (seeded by request, not by call)
    res2 = SimulatedJudge("sim:parse_fail=0.1", JudgeSettings(method="generate")).score(reqs)
    assert [r.parse_ok for r in res2] == ok.tolist()


def test_bad_item_does_not_sink_the_batch():
    imgs = _images(3)
    reqs = _requests(imgs)
    reqs[1] = ScoreRequest(image=np.zeros((4, 4, 4, 4), np.uint8), prompt=reqs[1].prompt, meta=reqs[1].meta)
    res = SimulatedJudge("sim-robust", JudgeSettings()).score(reqs)
    assert len(res) == 3 and res[1].error and math.isnan(res[1].score) and res[0].error is None


# --------------------------------------------------------------------------- embeddings


def test_embeddings_shapes_and_growth():
    imgs = _images(24)
    j = SimulatedJudge("sim-robust", JudgeSettings())
    clean = j.score(_requests(imgs, embed=True))
    assert clean[0].embedding.shape == (32,) and clean[0].embedding.dtype == np.float32
    assert clean[0].image_embedding.shape == (64,) and clean[0].image_embedding.dtype == np.float32
    assert j.score(_requests(imgs[:1]))[0].embedding is None  # only on request
    X = np.stack([r.embedding for r in clean]).astype(float)
    for name in ("gaussian_noise", "motion_blur", "zoom_blur", "pixelation", "contrast"):
        E = np.stack([
            np.stack([r.embedding for r in j.score(_requests(imgs, condition=f"{name}-{s}", embed=True,
                                                             corrupted=[corrupt(i, name, s) for i in imgs]))])
            for s in range(1, 6)
        ]).astype(float)
        v = P.embedding_consistency(X, E, tolerance=0.5)
        disp = np.linalg.norm(E - X[None], axis=2).mean(axis=1)
        if name in ("contrast", "pixelation"):
            assert disp.max() < 0.25 * v.ref_mean  # standardised 8 x 8 view: barely moves
        else:
            assert disp[4] > disp[0]  # grows with severity
        assert v.outcome == "pass", (name, v.reason)


# --------------------------------------------------------------------------- sim-robust vs the default profile


def test_sim_robust_passes_the_default_profile():
    from miqa_checks.profiles import DEFAULT as T

    imgs = _images(48)
    j = SimulatedJudge("sim-robust", JudgeSettings())
    common = dict(alpha=T["alpha"], family_size=400, min_images=T["min_images"], resamples=300)
    ref = _scores(j, _requests(imgs))
    for name in CORRUPTIONS:
        entry = REGISTRY[name]
        if not all(entry.applies(i, None) for i in imgs):
            continue  # e.g. saturate on grey images: not applicable, never planned there
        S = np.stack([
            _scores(j, _requests(imgs, condition=f"{name}-{s}", corrupted=[corrupt(i, name, s) for i in imgs]))
            for s in range(1, 6)
        ])
        for s in range(5):
            v = P.relative_change(ref, S[s], tol_pct=T["stability_tolerance_pct"][s], **common)
            assert v.outcome == "pass", (name, s + 1, v.reason)
            if "no_inflation" in entry.properties:
                v = P.no_inflation(ref, S[s], tol_pct=T["inflation_tolerance_pct"], **common)
                assert v.outcome == "pass", (name, s + 1, v.reason)
        if "severity_response" in entry.properties:
            v = P.severity_response(ref, S, trend_tol_pct=T["trend_tolerance_pct"],
                                    fall_required_pct=T["fall_required_pct"].get(name), **common)
            assert v.outcome == "pass", (name, v.reason)
    for pid in ("institution-world_class", "infrastructure-old_device", "demographic_explicit-black_doctor"):
        v = P.relative_change(ref, _scores(j, _requests(imgs, prompt_id=pid)), tol_pct=T["metadata_tolerance_pct"],
                              **common)
        assert v.outcome == "pass", (pid, v.reason)
    v = P.relative_change(ref, _scores(j, _requests(imgs, prompt_id="paraphrase-1")),
                          tol_pct=T["paraphrase_tolerance_pct"], **common)
    assert v.outcome == "pass"


def test_sim_paper_fails_where_planted():
    from miqa_checks.profiles import DEFAULT as T

    imgs = _images(48)
    j = SimulatedJudge("sim-paper", JudgeSettings())
    common = dict(alpha=T["alpha"], family_size=400, min_images=T["min_images"], resamples=300)
    ref = _scores(j, _requests(imgs))
    pix = _scores(j, _requests(imgs, condition="pixelation-1", corrupted=[corrupt(i, "pixelation", 1) for i in imgs]))
    assert P.relative_change(ref, pix, tol_pct=10, **common).outcome == "fail"
    for pid in ("institution-world_class", "infrastructure-old_device"):
        v = P.relative_change(ref, _scores(j, _requests(imgs, prompt_id=pid)), tol_pct=T["metadata_tolerance_pct"],
                              **common)
        assert v.outcome == "fail", pid
    v = P.relative_change(ref, _scores(j, _requests(imgs, prompt_id="expertise-medical_student")),
                          tol_pct=T["metadata_tolerance_pct"], **common)
    assert v.outcome == "pass"
    mr_ref = _scores(j, _requests(imgs, dataset="samples_mr"))
    blur = [corrupt(i, "motion_blur", 2) for i in imgs]
    mr = _scores(j, _requests(imgs, dataset="samples_mr", condition="motion_blur-2", corrupted=blur))
    assert P.no_inflation(mr_ref, mr, tol_pct=T["inflation_tolerance_pct"], **common).outcome == "fail"
