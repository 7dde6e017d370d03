"""Time the ImageNet-C set of miqa_checks.conditions against imagecorruptions on the same real images.

    python -m benchmarks.bench_corruptions [--repeats 5] [--rgb224] [--json out.json]

Images: the embedded samples (``miqa_checks.data.load_all(["samples"])``), else
skimage's camera (grey) and astronaut / retina (RGB) at 224 x 224. Images with a side
under 32 px are left out (imagecorruptions refuses them). Grey images go to
imagecorruptions stacked to three channels (it requires that) and to ours as grey.
``--rgb224``: the same images as MediMeta-C stores them, resized to 224 x 224 RGB.

One timing = every image x all five severities of one corruption. Each repeat times
ours and the reference back to back; one untimed warm-up pass fills the caches
(lookup tables, zoom operators) and imports. Reported: medians over repeats, the ratio
reference / ours of the medians, and the min / max of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from miqa_checks import conditions as corruptions

REF_NAMES = {"pixelation": "pixelate"}
MIN_REF_SIDE = 32


def load_images() -> tuple[list[np.ndarray], str]:
    """(images, description): embedded samples if available, else skimage images at 224 x 224."""
    try:
        from miqa_checks.data import load_all

        images = [r.image for ds in load_all(["samples"], max_images=None, seed=0) for r in ds.records]
        source = "miqa_checks.data samples"
    except Exception as exc:  # the data package is optional for this benchmark
        from skimage import data

        def rs(a: np.ndarray) -> np.ndarray:
            return np.asarray(Image.fromarray(a).resize((224, 224), Image.Resampling.LANCZOS))

        images = [rs(data.camera()), rs(data.astronaut()), rs(data.retina())]
        source = f"skimage camera/astronaut/retina 224x224 (samples unavailable: {type(exc).__name__})"
    kept = [im for im in images if min(im.shape[:2]) >= MIN_REF_SIDE]
    grey = sum(im.ndim == 2 for im in kept)
    return kept, f"{source}: {len(kept)} images ({grey} grey, {len(kept) - grey} RGB)"


def as_rgb224(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The images in MediMeta-C's format: 224 x 224 x 3 uint8 (grey stacked, then resized bilinearly)."""
    out = []
    for im in images:
        rgb = im if im.ndim == 3 else np.stack([im] * 3, axis=-1)
        out.append(np.asarray(Image.fromarray(rgb).resize((224, 224), Image.Resampling.BILINEAR)))
    return out


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(images: Sequence[np.ndarray], repeats: int = 5) -> list[dict]:
    """One row per corruption: {corruption, ours_s, reference_s, ratio, ratio_min, ratio_max}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from imagecorruptions import corrupt
    stacked = [im if im.ndim == 3 else np.stack([im] * 3, axis=-1) for im in images]

    def ours(name: str) -> None:
        for sev in corruptions.SEVERITIES:
            for im in images:
                corruptions.apply(im, name, sev)

    def reference(name: str) -> None:
        ref_name = REF_NAMES.get(name, name)
        for sev in corruptions.SEVERITIES:
            for im in stacked:
                corrupt(im, severity=sev, corruption_name=ref_name)

    rows = []
    for name in corruptions.ids("imagenet_c"):
        ours(name)  # warm-up: imports, cached tables and operators
        reference(name)
        t_ours, t_ref = [], []
        for _ in range(repeats):
            t_ours.append(_timed(lambda: ours(name)))
            t_ref.append(_timed(lambda: reference(name)))
        ratios = [r / o for o, r in zip(t_ours, t_ref)]
        med_o, med_r = statistics.median(t_ours), statistics.median(t_ref)
        rows.append(
            {
                "corruption": name,
                "ours_s": med_o,
                "reference_s": med_r,
                "ratio": med_r / med_o,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ours_s_all": t_ours,
                "reference_s_all": t_ref,
            }
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table of the rows plus the median ratio over the corruptions."""
    lines = [f"{'corruption':<15} {'ours s':>9} {'ref s':>9} {'ratio':>8} {'min':>8} {'max':>8}"]
    for r in rows:
        lines.append(
            f"{r['corruption']:<15} {r['ours_s']:>9.4f} {r['reference_s']:>9.4f} "
            f"{r['ratio']:>7.1f}x {r['ratio_min']:>7.1f}x {r['ratio_max']:>7.1f}x"
        )
    ratios = [r["ratio"] for r in rows]
    lines.append(f"median ratio over {len(rows)}: {statistics.median(ratios):.1f}x; lowest: {min(ratios):.1f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per corruption (default 5)")
    parser.add_argument("--rgb224", action="store_true", help="time on 224 x 224 RGB copies (MediMeta-C's format)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    images, described = load_images()
    if args.rgb224:
        images, described = as_rgb224(images), f"{described}, as 224 x 224 RGB"
    print(f"images: {described}; repeats: {args.repeats}")
    rows = run(images, repeats=args.repeats)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
