"""summary.html: self-contained page (inline CSS, PNGs referenced relatively), all text escaped.

Layout: interrupted banner (if any) -> headline (verdict counts per model, worst cells) ->
heat maps -> attribute shifts -> displacement vs score change -> family correlation ->
error records -> run provenance -> file list.
"""

from __future__ import annotations

import html
import json
from typing import Any, Iterable, Mapping

from miqa_checks.report import (
    VERDICTS,
    fmt_ci,
    fmt_num,
    fmt_pct,
    gate_lines,
    verdict_counts,
    worst_cells,
)
from miqa_checks.safe_io import scrub

MAX_WORST = 15
MAX_ERRORS = 200

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.2em 2em;
color:#222;max-width:1400px}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#c62828;color:#fff;padding:.7em 1em;font-weight:bold;font-size:1.1em;
border-radius:4px;margin-bottom:1em}
.v-pass{color:#2e7d32;font-weight:600}.v-fail{color:#c62828;font-weight:700}
.v-inconclusive{color:#757575;font-weight:600}.v-error{color:#000;font-weight:700}
.headline{display:flex;flex-wrap:wrap;gap:2em}.note{color:#555;font-size:.85em}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
pre{background:#f7f7f7;padding:.6em;font-size:.8em;overflow:auto;max-height:30em}
.reason{max-width:40em}
"""


def _e(x: Any) -> str:
    """Scrub + HTML-escape any value for the page."""
    return html.escape(scrub("" if x is None else x), quote=True)


def _verdict(v: Any) -> str:
    s = "" if v is None else str(v)
    cls = f"v-{s}" if s in VERDICTS else "v-error"
    return f'<span class="{cls}">{_e(s)}</span>'


def _table(headers: list[str], rows: Iterable[list[str]], num_cols: Iterable[int] = ()) -> str:
    nums = set(num_cols)
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(plot: Mapping[str, Any]) -> str:
    name = plot["path"].name
    return (f'<figure><img src="{html.escape(name, quote=True)}" alt="{_e(plot.get("title"))}">'
            f'<figcaption class="note">{_e(plot.get("caption", ""))}</figcaption></figure>')


def render_summary(*, cells: list[dict], scores: list[dict], displacements: list[dict],
                   errors: list[dict], run_info: Mapping[str, Any], plots: list[dict],
                   problems: list[str], interrupted: bool, files: list[str]) -> str:
    parts: list[str] = []
    title = "miqa-checks summary"
    parts.append(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>")
    if interrupted:
        parts.append('<div class="banner" id="interrupted">This run was interrupted; '
                     'results are partial.</div>')
    parts.append(f"<h1>{_e(title)}</h1>")
    facts = [f"{len(cells)} property cells", f"{len(scores)} score rows",
             f"{len(errors)} error records"]
    for label, keys in (("profile", ("profile",)), ("seed", ("seed",)),
                        ("device", ("device",)), ("started", ("start_time", "start")),
                        ("ended", ("end_time", "end"))):
        val = next((run_info[k] for k in keys if run_info.get(k) not in (None, "")), None)
        if val is not None and not isinstance(val, (dict, list)):
            facts.append(f"{label} {_e(val)}")
    parts.append(f'<p class="note">{"; ".join(facts)}.</p>')
    notes = gate_lines(cells, scores, errors)
    if notes:
        parts.append('<ul class="gate" id="gate">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")

    # ---- headline: counts per model + worst cells
    counts = verdict_counts(cells)
    parts.append('<h2 id="headline">Headline</h2><div class="headline"><div>')
    if counts:
        rows = [[_e(m or "(none)")] + [str(d[v]) for v in VERDICTS] + [str(d["total"])]
                for m, d in counts.items()]
        parts.append(_table(["model", *VERDICTS, "total"], rows, num_cols=range(1, len(VERDICTS) + 2)))
    else:
        parts.append("<p>No property cells were executed.</p>")
    parts.append("</div><div>")
    worst = worst_cells(cells)[:MAX_WORST]
    if worst:
        rows = [[_e(c.get("test_id")), _e(c.get("model")), _e(c.get("dataset")),
                 _e(fmt_pct(c.get("delta_pct"))), _e(fmt_ci(c.get("ci_low"), c.get("ci_high"))),
                 _e(c.get("threshold") or ""), _e(fmt_num(c.get("n"), "g")),
                 _verdict(c.get("verdict")),
                 f'<span class="reason">{_e(c.get("reason"))}</span>']
                for c in worst]
        parts.append(f"<b>Worst cells</b> (fail first, then by |change|; all {len(cells)} in "
                     f"<a href=\"matrix.csv\">matrix.csv</a>)")
        parts.append(_table(["test", "model", "dataset", "change", "CI", "threshold", "n",
                             "verdict", "reason"], rows, num_cols=(3, 4, 5, 6)))
    parts.append("</div></div>")
    if problems:
        parts.append('<p class="note">Plot problems: ' + "; ".join(_e(p) for p in problems)
                     + "</p>")

    # ---- plots
    sections = [("heatmap", "Corruption heat maps", "No corruption cells in this run."),
                ("attributes", "Attribute shifts", "No attribute (metadata) cells in this run."),
                ("displacement", "Embedding displacement vs score change",
                 "No displacement data in this run."),
                ("family", "Family correlation", "Needs scores from 2+ models.")]
    for kind, heading, empty in sections:
        parts.append(f'<h2 id="{kind}">{_e(heading)}</h2>')
        ps = [p for p in plots if p.get("kind") == kind]
        if not ps:
            parts.append(f'<p class="note">{_e(empty)}</p>')
        for p in ps:
            parts.append(_img(p))
            if kind == "displacement":
                st = p.get("stats", {})
                rows = [[_e(k or "(none)"), _e(fmt_num(v.get("rho"), ".3f") or "n/a"),
                         _e(fmt_ci(v.get("ci_low"), v.get("ci_high"))), str(v.get("n", 0))] for k, v in st.items()]
                parts.append(_table(["model", "Spearman rho", "95% CI", "n"], rows, num_cols=(1, 3)))
            if kind == "family":
                st = p.get("stats", {})
                ms = st.get("models", [])
                rows = [[_e(m)] + [_e(fmt_num(st["r"][i][j], ".3f") or "n/a")
                                   + f' <span class="note">(n={st["n"][i][j]})</span>'
                                   for j in range(len(ms))] for i, m in enumerate(ms)]
                parts.append(_table(["Pearson r", *ms], rows))

    # ---- errors
    parts.append(f'<h2 id="errors">Error records ({len(errors)})</h2>')
    if errors:
        rows = [[_e(r.get("model")), _e(r.get("dataset")), _e(r.get("file_or_image")),
                 _e(r.get("stage")), f'<span class="reason">{_e(r.get("reason"))}</span>']
                for r in errors[:MAX_ERRORS]]
        parts.append(_table(["model", "dataset", "file or image", "stage", "reason"], rows))
        if len(errors) > MAX_ERRORS:
            parts.append(f'<p class="note">First {MAX_ERRORS} shown; all in '
                         f'<a href="errors.csv">errors.csv</a>.</p>')
    else:
        parts.append('<p class="note">None.</p>')

    # ---- provenance
    parts.append('<h2 id="provenance">Run provenance</h2>')
    flat = []
    for k, v in run_info.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, indent=1, default=str)
            flat.append([_e(k), f"<pre>{_e(v)}</pre>"])
        else:
            flat.append([_e(k), _e(v)])
    parts.append(_table(["field", "value"], flat))

    parts.append('<h2 id="files">Files</h2><ul>')
    for f in files:
        parts.append(f'<li><a href="{html.escape(f, quote=True)}">{_e(f)}</a></li>')
    parts.append('<li>junit.xml (written by pytest, when enabled)</li>')
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)
