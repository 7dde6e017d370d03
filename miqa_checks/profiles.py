"""Built-in profiles: every tolerance the audit applies, with the reason for each.

A profile is a flat mapping of validated settings (see ``config.SCHEMA``). Percentages are
relative changes of the mean score against the reference (clean image, or the prompt with no
attribute), as published: ``(mean_condition - mean_reference) / mean_reference * 100``.
"""

from __future__ import annotations

from typing import Any

#: Tolerances of the ``default`` profile and why.
DEFAULT: dict[str, Any] = {
    # Images per dataset. 64 gives the statistics the power to see the published effects
    # (validated in selftests/test_validation.py); the embedded samples hold fewer.
    "max_images": 64,
    # One forward pass, probability-weighted level: no decoding, no parse failures.
    "scoring": "expected",
    "max_new_tokens": 200,
    "system_prompt": "",
    # ImageNet-C parameters, corrupted on the fly from the clean images.
    "corruption_params": "imagenet_c",
    "corruption_source": "on_the_fly",
    # Family-wise false-fail rate over one model's whole matrix (Bonferroni).
    "alpha": 0.05,
    "bootstrap_resamples": 2000,
    # Below this many paired images a cell is inconclusive whatever its CI.
    "min_images": 5,
    # Stability: mild corruption must not move the score more than a rater's rounding error
    # (+-10 % is half a level at a mean of 5); heavier damage may move it more, so the
    # tolerance widens with severity. Index = severity - 1.
    "stability_tolerance_pct": [10.0, 10.0, 15.0, 20.0, 25.0],
    # Severity response: the mean score may not rise by more than this per severity step.
    "trend_tolerance_pct": 1.0,
    # A judge must notice heavy damage: at severity 5 these corruptions must lower the score by
    # at least this much. Brightness +0.5 is a legitimate exposure change, not damage.
    "fall_required_pct": {
        "contrast": 5.0,
        "gaussian_noise": 5.0,
        "impulse_noise": 5.0,
        "motion_blur": 5.0,
        "pixelation": 5.0,
        "zoom_blur": 5.0,
    },
    # A worse image may never score higher than its clean original by more than this.
    "inflation_tolerance_pct": 5.0,
    # Who took the image, and where, says nothing about its pixels: +-5 % (a quarter level).
    "metadata_tolerance_pct": 5.0,
    # Rewording the instruction should not move the score more than mild corruption may.
    "paraphrase_tolerance_pct": 10.0,
    # Same request twice (second one in a batch of one): identical within 1e-3 points.
    "repeatability_tolerance": 1e-3,
    # At most 5 % unparseable and no out-of-range answers.
    "max_parse_failure_rate": 0.05,
    "max_out_of_range_rate": 0.0,
    # Embedding displacement relative to the spread of clean embeddings (1.0 = as far as a
    # typical other image); at severity 1 a corrupted image should stay well inside that.
    "embedding_tolerance": 0.5,
    # Upgrade gate: the low end of the published same-family correlation range, and the
    # extra instability a new model may show against the baseline, paired by image.
    "baseline_min_correlation": 0.67,
    "baseline_margin_pct": 5.0,
}

#: The published protocol: paper prompt, generate + parse, severities pooled in the report.
PAPER: dict[str, Any] = {
    **DEFAULT,
    "scoring": "generate",
    "max_new_tokens": 200,
}

#: Deployment audit: tighter tolerances, stability required over more of the range.
STRICT: dict[str, Any] = {
    **DEFAULT,
    "stability_tolerance_pct": [5.0, 5.0, 10.0, 15.0, 20.0],
    "inflation_tolerance_pct": 2.0,
    "metadata_tolerance_pct": 2.5,
    "paraphrase_tolerance_pct": 5.0,
    "max_parse_failure_rate": 0.01,
    "embedding_tolerance": 0.35,
    "baseline_min_correlation": 0.8,
    "baseline_margin_pct": 2.5,
}

PROFILES: dict[str, dict[str, Any]] = {"default": DEFAULT, "paper": PAPER, "strict": STRICT}
