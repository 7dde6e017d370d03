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
    # A cell that lost more than this share of its images to errors (the judge failed, the answer
    # did not parse, the condition image could not be made) is an error, not a verdict: the
    # images that happened to work need not represent the rest, and a dead model must not pass.
    "max_lost_share": 0.05,
    # What an inconclusive cell (too few images to decide) does to the run: ``skip`` (reported,
    # the run can still pass), ``fail``, or ``fail-above:<share>`` (the run fails when more than
    # that share of the executed cells could not decide). Exploring: skip; a deployment gate
    # should not ship what the data cannot show, so ``strict`` fails.
    "inconclusive": "skip",
    # The unit of replication. ``group``: images of one group (crops of one source image, frames
    # of one clip, slices of one series, one patient or study, a manifest's ``group`` column) are
    # one unit, with a cluster-robust standard error over groups: the verdict generalises to new
    # sources. ``image``: every image is a unit: the verdict is about the audited images
    # themselves (right when every image comes from a different source, or for a fixed test set).
    # The requests of one image are never independent trials, whichever unit is chosen.
    "unit": "group",
    # Below this many paired images a cell is inconclusive whatever its CI.
    "min_images": 5,
    # Stability: mild corruption must not move the score more than a rater's rounding error
    # (+-10 % is half a level at a mean of 5); heavier damage may move it more, so the
    # tolerance widens with severity. Index = severity - 1.
    "stability_tolerance_pct": [10.0, 10.0, 15.0, 20.0, 25.0],
    # Severity response: the mean score may not rise by more than this per severity step.
    "trend_tolerance_pct": 1.0,
    # A judge must notice heavy damage: at severity 5 these corruptions must lower the score by
    # at least this much (5 % = a sixth of a level at a mean of 3.5, just above one rater's
    # rounding). Which corruptions, and why, is FALL_REQUIRED_REASONS below; brightness has none.
    "fall_required_pct": {
        "contrast": 5.0,
        "gaussian_noise": 5.0,
        "impulse_noise": 5.0,
        "motion_blur": 5.0,
        "pixelation": 5.0,
        "zoom_blur": 5.0,
        "jpeg_compression": 5.0,
        "speckle_noise": 5.0,
        "shot_noise": 5.0,
        "gaussian_blur": 5.0,
        "defocus_blur": 5.0,
        "contrast_down": 5.0,
    },
    # Corruption sets planned beside the protocol's seven ImageNet-C corruptions (always there):
    # ``medical`` adds the MedMNIST-C artefacts real scanners, slides and cameras produce, each
    # on the modalities MedMNIST-C assigns it (miqa_checks/conditions/medical.py, DEFAULT_MAPPING).
    "corruption_sets": ["imagenet_c", "medical"],
    # Modality (canonical key such as ``ultrasound``, or a dataset's modality text) -> the ids of
    # the extra sets to plan for it instead of the default mapping; {} keeps the defaults.
    "corruption_mapping": {},
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

#: Why a quality judge must score an image lower at severity 5 (ImageNet-C parameters,
#: conditions/imagenet_c.py), or why it need not. Every audited corruption has an entry; one with
#: a floor in ``fall_required_pct`` must say why the damage removes what a rater grades.
FALL_REQUIRED_REASONS: dict[str, str] = {
    "brightness": "no floor: +0.5 of the range is an exposure change a reader undoes with the window; "
                  "a judge may reasonably keep its score (only a rise is checked, by the trend part)",
    "contrast": "floor: factor 0.05 squeezes the range 20x, leaving about 13 grey levels of 8 bits; "
                "low-contrast lesions vanish",
    "gaussian_noise": "floor: sigma 0.38 of the range buries structures below a third of the range in noise",
    "impulse_noise": "floor: 27 % of the pixels replaced by salt and pepper",
    "motion_blur": "floor: a 20-pixel kernel (sigma 15) smears every edge narrower than the kernel",
    "pixelation": "floor: factor 0.25 keeps one pixel in 16 (4 x 4 blocks); detail below 4 pixels is gone. "
                  "Milder severities (0.6-0.4) are not required to fall: a judge may not see them at its input size",
    "zoom_blur": "floor: averaging zooms up to 1.31x blurs everything away from the centre radially",
    "jpeg_compression": "floor: quality 5-7 at severity 5 leaves 8x8 block artefacts larger than fine structures",
    "speckle_noise": "floor: multiplicative noise with sigma 0.2-0.6 of the signal at severity 5 hides texture",
    "shot_noise": "floor: Poisson noise at 5-80 photons per level at severity 5 is a severely under-dosed image",
    "gaussian_blur": "floor: an 11-25 pixel kernel at severity 5 removes edges a reader grades",
    "defocus_blur": "floor: a 2.5-8 pixel disc at severity 5 is an out-of-focus image",
    "contrast_down": "floor: contrast squeezed to 0.15-0.5 at severity 5 hides low-contrast structures. "
                     "brightness_down has no floor (a dark image windowed back keeps its detail: trend only); "
                     "the upward intensity changes, gamma and saturate get no severity response at all, "
                     "nor do black_corner (non-monotone severities), stain_deposit, bubble and characters "
                     "(local artefacts over part of the image: trend only, no floor)",
}

#: The published protocol: paper prompt, generate + parse, severities pooled in the report.
PAPER: dict[str, Any] = {
    **DEFAULT,
    # The published protocol has the seven ImageNet-C corruptions only.
    "corruption_sets": ["imagenet_c"],
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
    "inconclusive": "fail",
}

PROFILES: dict[str, dict[str, Any]] = {"default": DEFAULT, "paper": PAPER, "strict": STRICT}
