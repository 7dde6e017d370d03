"""PNG plots for summary.html (matplotlib imported lazily, Agg canvas, no pyplot state).

:func:`make_plots` writes, next to summary.html:

- ``plot_heatmap_<model>.png``: one heat map per dataset, % score change by corruption x
  severity (diverging colormap centred at 0, values annotated, failing cells outlined);
- ``plot_attributes_<model>.png``: % shift per attribute prompt vs the neutral prompt, with CIs;
- ``plot_displacement.png``: relative embedding displacement vs % score change, Spearman rho;
- ``plot_family_correlation.png`` (2+ models): Pearson r of per-image scores between models.

The statistics beside the plots come from :mod:`miqa_checks.properties` (Spearman rho with a
bootstrap CI; pairwise Pearson r), so the HTML shows them even when matplotlib is missing.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from miqa_checks.report import as_float, unique_plot_name
from miqa_checks.conditions import ids as corruption_ids
from miqa_checks.safe_io import atomic_write_bytes, scrub

_VERDICT_COLOR = {"pass": "#2e7d32", "fail": "#c62828", "inconclusive": "#757575",
                  "error": "#000000"}


# --------------------------------------------------------------------------- statistics


def displacement_stats(displacements: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """``{model or "all": {"rho", "ci_low", "ci_high", "n"}}``: Spearman rho of displacement vs
    score change with its bootstrap 95 % CI (``properties.displacement_score_correlation``)."""
    from miqa_checks.properties import displacement_score_correlation

    per: dict[str, tuple[list[float], list[float]]] = {}
    for d in displacements:
        x, y = as_float(d.get("displacement")), as_float(d.get("score_change_pct"))
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        for key in (str(d.get("model") or ""), "all"):
            xs, ys = per.setdefault(key, ([], []))
            xs.append(x)
            ys.append(y)
    out = {}
    for key, (xs, ys) in per.items():
        rho, lo, hi = displacement_score_correlation(xs, ys)
        out[key] = {"rho": rho, "ci_low": lo, "ci_high": hi, "n": len(xs)}
    if "all" in out:  # put "all" last
        out["all"] = out.pop("all")
    return out


def family_correlation(scores: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[float]],
                                                                      list[list[int]]]:
    """Pearson r between models on per-image scores, pivoted by model over the shared keys
    (dataset, image_id, condition, prompt_id), by ``properties.family_correlation``.
    Returns (models, r matrix, n matrix: pairs both models scored)."""
    import numpy as np

    from miqa_checks.properties import family_correlation as pairwise_pearson

    table: dict[tuple, dict[str, float]] = {}
    models: list[str] = []
    for s in scores:
        m = str(s.get("model") or "")
        v = as_float(s.get("score"))
        if not math.isfinite(v):
            continue
        if m not in models:
            models.append(m)
        key = (s.get("dataset"), s.get("image_id"), s.get("condition"), s.get("prompt_id"))
        table.setdefault(key, {})[m] = v
    pivot = {m: np.array([row.get(m, np.nan) for row in table.values()]) for m in models}  # (keys,) per model
    _, r = pairwise_pearson(pivot)
    scored = np.array([np.isfinite(pivot[m]) for m in models]).astype(int) if models else np.zeros((0, 0), int)
    n = scored @ scored.T
    for i in range(len(models)):  # a model agrees with itself wherever it scored
        r[i, i] = 1.0 if n[i, i] else math.nan
    return models, r.tolist(), n.tolist()


# --------------------------------------------------------------------------- helpers


def _sev(x: Any) -> int | None:
    f = as_float(x)
    return int(f) if math.isfinite(f) else None


def _ordered(values: Iterable[str], canonical: tuple[str, ...] = ()) -> list[str]:
    seen = list(dict.fromkeys(v for v in values if v))
    return [c for c in canonical if c in seen] + [v for v in seen if v not in canonical]


def _mpl():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return matplotlib, Figure, FigureCanvasAgg


def _save(fig, canvas_cls, path: Path) -> Path:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 1] + "~"


# --------------------------------------------------------------------------- plots


def make_plots(report_dir: Path, *, cells: list[dict], scores: list[dict],
               displacements: list[dict], problems: list[str]) -> list[dict]:
    """Write every plot that has data; return ``[{kind, path, title, model, caption}]``.

    A plot that fails is skipped and its reason appended to ``problems``.
    """
    used: set[str] = set()
    out: list[dict] = []
    models = _ordered(str(c.get("model") or "") for c in cells)
    jobs = []
    for m in models:
        mc = [c for c in cells if str(c.get("model") or "") == m]
        jobs.append(("heatmap", m, mc, lambda mc=mc, m=m: plot_heatmaps(report_dir, m, mc, used)))
        jobs.append(("attributes", m, mc, lambda mc=mc, m=m: plot_attributes(report_dir, m, mc, used)))
    jobs.append(("displacement", "", displacements, lambda: plot_displacement(report_dir, displacements, used)))
    jobs.append(("family", "", scores, lambda: plot_family(report_dir, scores, used)))
    memo = _PlotMemo(report_dir)
    for kind, model, inputs, job in jobs:
        key = memo.key(kind, model, inputs)
        try:
            res = memo.reuse(key, used)
            if res is False:
                res = memo.keep(key, job())
        except Exception as exc:
            problems.append(scrub(f"{kind} plot {model}: {type(exc).__name__}: {exc}"))
            continue
        if res is not None:
            res.setdefault("model", model)
            out.append(res)
    memo.save()
    return out


class _PlotMemo:
    """Plots of an earlier run in the same folder, by a hash of their inputs: a plot whose inputs,
    code version and matplotlib did not change is not drawn again (``.plots.json`` holds the
    hash, the record and the PNG's sha256; a PNG changed or removed since is drawn again)."""

    FILE = ".plots.json"
    VERSION = 1  # bump when a plot's drawing changes

    def __init__(self, report_dir: Path) -> None:
        import json

        self.dir = report_dir
        self.new: dict[str, Any] = {}
        try:
            self.old = json.loads((report_dir / self.FILE).read_text())
        except (OSError, ValueError):
            self.old = {}
        if not isinstance(self.old, dict):
            self.old = {}
        try:
            from importlib.metadata import version

            self.mpl = version("matplotlib")
        except Exception:  # noqa: BLE001 - unknown version: never reuse
            self.mpl = None

    def key(self, kind: str, model: str, inputs: Any) -> str | None:
        import hashlib
        import json

        if self.mpl is None:
            return None
        text = json.dumps([self.VERSION, self.mpl, kind, model, inputs], sort_keys=True, default=_plain)
        return hashlib.sha256(text.encode()).hexdigest()

    def reuse(self, key: str | None, used: set[str]) -> dict | None | bool:
        """The earlier record (None: no plot for these inputs), or False: draw it."""
        import hashlib

        entry = self.old.get(key) if key else None
        if not isinstance(entry, dict):
            return False
        record = entry.get("record")
        if record is None:
            self.new[key] = entry
            return None
        path = self.dir / str(record.get("path", ""))
        try:
            same = path.parent == self.dir and hashlib.sha256(path.read_bytes()).hexdigest() == entry.get("png")
        except OSError:
            same = False
        if not same or path.name in used:
            return False
        used.add(path.name)
        self.new[key] = entry
        return {**record, "path": path}

    def keep(self, key: str | None, res: dict | None) -> dict | None:
        """Remember a drawn plot; returns its record as a reuse would give it (JSON values)."""
        import hashlib
        import json

        if key is None:
            return res
        if res is None:
            self.new[key] = {"record": None}
            return None
        try:
            record = json.loads(json.dumps({**res, "path": Path(res["path"]).name}, default=_plain))
            png = hashlib.sha256(Path(res["path"]).read_bytes()).hexdigest()
        except (OSError, TypeError, ValueError):
            return res
        self.new[key] = {"record": record, "png": png}
        return {**record, "path": Path(res["path"])}

    def save(self) -> None:
        import json

        from miqa_checks.safe_io import atomic_write_text

        try:
            atomic_write_text(self.dir / self.FILE, json.dumps(self.new))
        except OSError:
            pass


def _plain(x: Any) -> Any:
    """numpy scalars and arrays as Python values; anything else as its text."""
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _heat_value_cells(cells: list[dict]) -> list[dict]:
    with_cond = [c for c in cells if c.get("corruption") and _sev(c.get("severity")) is not None]
    stab = [c for c in with_cond if c.get("property") == "corruption_stability"]
    if stab:
        return stab
    props = _ordered(str(c.get("property") or "") for c in with_cond)
    return [c for c in with_cond if props and c.get("property") == props[0]]


def plot_heatmaps(report_dir: Path, model: str, cells: list[dict], used: set[str]) -> dict | None:
    """One figure per model, one heat map per dataset (corruption rows x severity columns)."""
    value_cells = _heat_value_cells(cells)
    if not value_cells:
        return None
    datasets = _ordered(str(c.get("dataset") or "") for c in value_cells)
    fails = {(str(c.get("dataset") or ""), str(c.get("corruption")), _sev(c.get("severity")))
             for c in cells if c.get("verdict") == "fail" and c.get("corruption")}
    grids = []
    vmax = 0.0
    for ds in datasets:
        dc = [c for c in value_cells if str(c.get("dataset") or "") == ds]
        cors = _ordered((str(c.get("corruption")) for c in dc), corruption_ids())  # registry order
        sevs = sorted({_sev(c.get("severity")) for c in dc})
        grid = [[math.nan] * len(sevs) for _ in cors]
        for c in dc:
            v = as_float(c.get("delta_pct"))
            i, j = cors.index(str(c.get("corruption"))), sevs.index(_sev(c.get("severity")))
            if math.isfinite(v) and math.isnan(grid[i][j]):
                grid[i][j] = v
                vmax = max(vmax, abs(v))
        grids.append((ds, cors, sevs, grid))
    vmax = vmax or 1.0

    matplotlib, Figure, Canvas = _mpl()
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    n = len(grids)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.6 * ncols + 0.8, 3.6 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    im = None
    for k, (ds, cors, sevs, grid) in enumerate(grids):
        ax = axes[k // ncols][k % ncols]
        im = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
        ax.set_yticks(range(len(cors)), cors)
        ax.set_xlabel("severity")
        ax.set_title(_short(ds), fontsize=10)
        for i in range(len(cors)):
            for j in range(len(sevs)):
                v = grid[i][j]
                if math.isfinite(v):
                    ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(v) > 0.6 * vmax else "black")
                if (ds, cors[i], sevs[j]) in fails:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                           edgecolor="black", linewidth=2.5))
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="score change (%)")
    fig.suptitle(f"{_short(model, 60)}: % score change vs clean (outlined: failing cell)",
                 fontsize=11)
    name = unique_plot_name("plot_heatmap", model, used)
    path = _save(fig, Canvas, report_dir / name)
    return {"kind": "heatmap", "path": path, "title": f"Corruption heat maps: {model}",
            "caption": "Percentage change of the mean score vs clean, by corruption (rows) and "
                       "severity (columns), one map per dataset; red = drop, blue = rise; "
                       "outlined cells failed a test at that condition; grey = no value."}


def plot_attributes(report_dir: Path, model: str, cells: list[dict], used: set[str]) -> dict | None:
    """% shift per attribute prompt vs the neutral prompt, CI error bars, one row per attribute."""
    ac = [c for c in cells if c.get("attribute") and c.get("property") == "metadata_invariance"]
    if not ac:
        ac = [c for c in cells if c.get("attribute")]
    ac = [c for c in ac if math.isfinite(as_float(c.get("delta_pct")))]
    if not ac:
        return None
    attrs = _ordered(str(c.get("attribute")) for c in ac)
    datasets = _ordered(str(c.get("dataset") or "") for c in ac)
    _, Figure, Canvas = _mpl()
    fig = Figure(figsize=(7.5, 1.2 + 0.38 * len(attrs) * max(1, min(len(datasets), 3))),
                 layout="constrained")
    ax = fig.subplots()
    step = 0.7 / max(len(datasets), 1)
    markers = "osD^v<>ph*"
    for di, ds in enumerate(datasets):
        for c in ac:
            if str(c.get("dataset") or "") != ds:
                continue
            y = attrs.index(str(c.get("attribute"))) + (di - (len(datasets) - 1) / 2) * step
            x = as_float(c.get("delta_pct"))
            lo, hi = as_float(c.get("ci_low")), as_float(c.get("ci_high"))
            xerr = None
            if math.isfinite(lo) and math.isfinite(hi):
                xerr = [[max(x - lo, 0.0)], [max(hi - x, 0.0)]]
            color = _VERDICT_COLOR.get(str(c.get("verdict")), "#000000")
            ax.errorbar([x], [y], xerr=xerr, fmt=markers[di % len(markers)], color=color,
                        ecolor=color, capsize=3, markersize=5)
        ax.plot([], [], markers[di % len(markers)], color="#444444", label=_short(ds, 30))
    thr = [as_float(c.get("threshold")) for c in ac]
    thr = [t for t in thr if math.isfinite(t) and t > 0]
    if thr and max(thr) == min(thr):
        for s in (-1, 1):
            ax.axvline(s * thr[0], color="#999999", linestyle=":", linewidth=1)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(attrs)), [_short(a, 45) for a in attrs])
    ax.invert_yaxis()
    ax.set_xlabel("score shift vs neutral prompt (%), 95% CI")
    ax.set_title(f"{_short(model, 60)}: attribute shifts (green pass, red fail, grey inconclusive)",
                 fontsize=10)
    if len(datasets) > 1:
        ax.legend(fontsize=8, loc="best")
    name = unique_plot_name("plot_attributes", model, used)
    path = _save(fig, Canvas, report_dir / name)
    return {"kind": "attributes", "path": path, "title": f"Attribute shifts: {model}",
            "caption": "Percentage shift of the mean score when the prompt names an attribute, "
                       "vs the neutral prompt, with confidence intervals; dotted lines: "
                       "tolerance (when one tolerance applies to all)."}


def plot_displacement(report_dir: Path, displacements: list[dict], used: set[str]) -> dict | None:
    pts = [d for d in displacements
           if math.isfinite(as_float(d.get("displacement")))
           and math.isfinite(as_float(d.get("score_change_pct")))]
    if not pts:
        return None
    stats = displacement_stats(pts)
    models = _ordered(str(d.get("model") or "") for d in pts)
    _, Figure, Canvas = _mpl()
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    for m in models:
        xs = [as_float(d["displacement"]) for d in pts if str(d.get("model") or "") == m]
        ys = [as_float(d["score_change_pct"]) for d in pts if str(d.get("model") or "") == m]
        st = stats.get(m, {})
        rho = st.get("rho", math.nan)
        ax.scatter(xs, ys, s=18, alpha=0.75,
                   label=f"{_short(m, 35)} (rho={rho:.2f}, n={st.get('n', 0)})"
                   if math.isfinite(rho) else f"{_short(m, 35)} (n={st.get('n', 0)})")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("relative embedding displacement")
    ax.set_ylabel("score change (%)")
    rho_all = stats.get("all", {}).get("rho", math.nan)
    ax.set_title("Embedding displacement vs score change"
                 + (f" (Spearman rho = {rho_all:.2f})" if math.isfinite(rho_all) else ""),
                 fontsize=10)
    ax.legend(fontsize=8, loc="best")
    name = unique_plot_name("plot_displacement", "", used)
    path = _save(fig, Canvas, report_dir / name)
    return {"kind": "displacement", "path": path, "title": "Displacement vs score change",
            "caption": "One point per (model, dataset, corruption, severity): relative embedding "
                       "displacement of the corrupted image vs the percentage score change.",
            "stats": stats}


def plot_family(report_dir: Path, scores: list[dict], used: set[str]) -> dict | None:
    models, r, n = family_correlation(scores)
    if len(models) < 2:
        return None
    _, Figure, Canvas = _mpl()
    k = len(models)
    fig = Figure(figsize=(1.6 + 1.1 * k, 1.2 + 1.0 * k), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(r, cmap="RdBu", vmin=-1, vmax=1)
    labels = [_short(m, 25) for m in models]
    ax.set_xticks(range(k), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    for i in range(k):
        for j in range(k):
            v = r[i][j]
            ax.text(j, i, (f"{v:.2f}" if math.isfinite(v) else "n/a") + f"\nn={n[i][j]}",
                    ha="center", va="center", fontsize=7,
                    color="white" if math.isfinite(v) and abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    ax.set_title("Per-image score correlation between models", fontsize=10)
    name = unique_plot_name("plot_family_correlation", "", used)
    path = _save(fig, Canvas, report_dir / name)
    return {"kind": "family", "path": path, "title": "Family correlation",
            "caption": "Pearson correlation of per-image scores between models over the shared "
                       "(dataset, image_id, condition, prompt_id) keys; n = shared scored rows.",
            "stats": {"models": models, "r": r, "n": n}}
