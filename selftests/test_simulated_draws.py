"""Every random draw of a simulated judge is keyed by its request (issue 13, item 6).

``-k`` and ``-n`` change which requests share a batch and in which order they come; a request's
score must not depend on that, or a spot check disagrees with the full audit.
"""

from __future__ import annotations

import numpy as np
import pytest

from miqa_checks.judges.base import JudgeSettings
from miqa_checks.judges.simulated import SimulatedJudge
from miqa_checks.records import RequestMeta, ScoreRequest


def _requests(n: int = 24) -> list[ScoreRequest]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        image = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
        out.append(ScoreRequest(image=image, prompt="Rate this CT image from 1 to 5.",
                                meta=RequestMeta("samples_ct", "CT", f"img{i:03d}", repeat=i % 2)))
    return out


@pytest.mark.parametrize("spec", ["sim:nondeterminism=0.05", "sim:noise=0.05,nondeterminism=0.1,parse_fail=0.2"])
def test_same_request_same_score_whatever_the_batch(spec):
    reqs = _requests()
    whole = [r.score for r in SimulatedJudge(spec, JudgeSettings(seed=4)).score(reqs)]
    order = np.random.default_rng(0).permutation(len(reqs))
    shuffled = SimulatedJudge(spec, JudgeSettings(seed=4)).score([reqs[i] for i in order])
    one_by_one = SimulatedJudge(spec, JudgeSettings(seed=4))
    alone = [one_by_one.score([r])[0].score for r in reversed(reqs)][::-1]
    # equal up to float rounding of the batched level_probs (a batch of one vs 24 rows)
    np.testing.assert_allclose(np.array([s.score for s in shuffled]), np.array(whole)[order], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.array(alone), np.array(whole), rtol=0, atol=1e-12)


def test_nondeterminism_still_breaks_repeatability():
    """The repeat copy of a request is a different draw, so the defect stays visible."""
    j = SimulatedJudge("sim:nondeterminism=0.05", JudgeSettings(seed=1))
    base = _requests(12)
    first = [j.score([r])[0].score for r in base]
    again = [j.score([ScoreRequest(image=r.image, prompt=r.prompt,
                                   meta=RequestMeta(r.meta.dataset, r.meta.modality, r.meta.image_id,
                                                    repeat=1 - r.meta.repeat))])[0].score for r in base]
    assert np.mean(np.abs(np.array(first) - np.array(again)) > 1e-3) > 0.8
    # another seed, other draws
    k = SimulatedJudge("sim:nondeterminism=0.05", JudgeSettings(seed=2))
    assert [k.score([r])[0].score for r in base] != first
