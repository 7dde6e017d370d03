"""The medical set of miqa_checks.conditions against medmnistc (MedMNIST-C): fidelity and speed.

    python -m benchmarks.bench_medical_corruptions [--repeats 5] [--json out.json]

Images: the embedded samples as MediMeta-C stores them (224 x 224 RGB, see
``bench_corruptions.as_rgb224``). Both implementations get the same RGB arrays (medmnistc takes
a PIL image; the conversion is part of its timing, as it is part of ours to call it), each
corruption with the parameter table of its default MedMNIST-C dataset; ``saturate`` only the
colour images (it does not apply to grey ones).

Speed: one timing = every image x all five severities of one corruption; repeats alternate ours
and the reference; medians, the ratio reference / ours, and the per-repeat extremes.

Fidelity, per corruption, over all images and severities: ``psnr`` (dB, mean over pairs; inf when
equal) for the deterministic ones; for the random ones, the mean and standard deviation of the
change ``out - in`` (grey levels), ours and the reference's, and the share of changed pixels.

Needs ``medmnistc`` (``pip install --no-deps medmnistc``: its own pins would downgrade
scikit-image) and, for its import, Wand with ImageMagick (``apt-get install libmagickwand-dev``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from miqa_checks import conditions

#: Our id -> medmnistc's name where they differ.
REF_NAMES = {"gamma_up": "gamma_corr_up", "gamma_down": "gamma_corr_down"}
#: Corruptions whose outputs are random (fidelity by change statistics, not PSNR).
RANDOM = ("speckle_noise", "shot_noise", "stain_deposit", "bubble", "characters")


def default_dataset(name: str) -> str:
    """The MedMNIST-C dataset whose table an image of unknown modality gets."""
    return conditions.parameters(name, 1)["source"].split(":", 1)[1]


def reference(name: str) -> Any:
    """medmnistc's corruption object for ``name`` with the same table as ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    return CORRUPTIONS_DS[default_dataset(name)][REF_NAMES.get(name, name)]


def reference_apply(ref: Any, image: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """medmnistc's output for one RGB uint8 image (it draws from numpy's and Python's global state)."""
    np.random.seed(seed)
    random.seed(seed)
    ref.rng = np.random.default_rng(seed)  # ImpulseNoise-style attribute; harmless elsewhere
    return np.asarray(ref.apply(Image.fromarray(image), severity=severity - 1))


def load_images() -> tuple[list[np.ndarray], str]:
    from .bench_corruptions import as_rgb224, load_images as load

    images, described = load()
    return as_rgb224(images), f"{described}, as 224 x 224 RGB"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def fidelity(images: Sequence[np.ndarray], name: str) -> dict[str, Any]:
    """Per corruption: PSNR ours vs reference (deterministic), or change statistics (random)."""
    ref = reference(name)
    row: dict[str, Any] = {"corruption": name, "dataset": default_dataset(name)}
    if name not in RANDOM:
        values = [psnr(conditions.apply(im, name, s), reference_apply(ref, im, s, 0))
                  for s in conditions.SEVERITIES for im in images]
        finite = [v for v in values if math.isfinite(v)]
        row.update(psnr_mean=statistics.fmean(finite) if finite else math.inf, psnr_min=min(values),
                   identical_share=sum(not math.isfinite(v) for v in values) / len(values))
        return row
    ours_d, ref_d, ours_c, ref_c = [], [], [], []
    for s in conditions.SEVERITIES:
        for i, im in enumerate(images):
            a = conditions.apply(im, name, s, seed=i).astype(np.int16) - im
            b = reference_apply(ref, im, s, i).astype(np.int16) - im
            ours_d.append(a), ref_d.append(b)
            ours_c.append(float(np.mean(a != 0))), ref_c.append(float(np.mean(b != 0)))
    a, b = np.concatenate([d.ravel() for d in ours_d]), np.concatenate([d.ravel() for d in ref_d])
    row.update(ours_mean=float(a.mean()), ref_mean=float(b.mean()), ours_std=float(a.std()), ref_std=float(b.std()),
               ours_changed=statistics.fmean(ours_c), ref_changed=statistics.fmean(ref_c))
    return row


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(images: Sequence[np.ndarray], name: str, repeats: int) -> dict[str, Any]:
    ref = reference(name)

    def ours() -> None:
        for s in conditions.SEVERITIES:
            for im in images:
                conditions.apply(im, name, s)

    def theirs() -> None:
        for s in conditions.SEVERITIES:
            for im in images:
                np.asarray(ref.apply(Image.fromarray(im), severity=s - 1))

    ours(), theirs()  # warm-up: imports, cached tables
    t_o, t_r = [], []
    for _ in range(repeats):
        t_o.append(_timed(ours))
        t_r.append(_timed(theirs))
    ratios = [r / o for o, r in zip(t_o, t_r)]
    mo, mr = statistics.median(t_o), statistics.median(t_r)
    return {"corruption": name, "ours_s": mo, "reference_s": mr, "ratio": mr / mo, "ratio_min": min(ratios),
            "ratio_max": max(ratios), "ours_s_all": t_o, "reference_s_all": t_r}


def run(images: Sequence[np.ndarray], repeats: int = 5, names: Sequence[str] | None = None) -> list[dict]:
    """One row per medical corruption: speed columns plus fidelity columns."""
    rows = []
    for name in names or conditions.ids("medical"):
        usable = [im for im in images if conditions.REGISTRY[name].applies(im)]  # saturate: colour images only
        row = speed(usable, name, repeats)
        row.update(fidelity(usable[: max(4, len(usable) // 4)], name), images=len(usable))
        rows.append(row)
    return rows


def describe_fidelity(r: dict) -> str:
    """One line: PSNR (deterministic ones) or change statistics (random ones), ours vs medmnistc."""
    if "psnr_mean" in r:
        return f"PSNR {r['psnr_mean']:.1f} dB (min {r['psnr_min']:.1f}), identical {100 * r['identical_share']:.0f} %"
    return (f"change mean {r['ours_mean']:+.2f} vs {r['ref_mean']:+.2f}, sd {r['ours_std']:.2f} vs {r['ref_std']:.2f}, "
            f"changed {100 * r['ours_changed']:.1f} % vs {100 * r['ref_changed']:.1f} %")


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table: speed and fidelity per corruption, then the median ratio."""
    lines = ["| corruption | table | ours s | medmnistc s | ratio (min..max) | fidelity (ours vs medmnistc) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['corruption']} | {r['dataset']} | {r['ours_s']:.4f} | {r['reference_s']:.4f} | "
                     f"{r['ratio']:.1f}x ({r['ratio_min']:.1f}..{r['ratio_max']:.1f}) | {describe_fidelity(r)} |")
    ratios = [r["ratio"] for r in rows]
    lines.append(f"\nmedian ratio over {len(rows)}: {statistics.median(ratios):.1f}x; lowest: {min(ratios):.2f}x "
                 f"({min(rows, key=lambda r: r['ratio'])['corruption']})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per corruption (default 5)")
    parser.add_argument("--only", help="comma-separated corruption ids (default: the whole medical set)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    images, described = load_images()
    print(f"images: {described}; repeats: {args.repeats}")
    rows = run(images, repeats=args.repeats, names=args.only.split(",") if args.only else None)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float) + "\n")
    return rows


if __name__ == "__main__":
    main()
