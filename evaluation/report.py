"""The self-contained HTML report: verdict, gates, headline measures, figures, every measure.

Every image is embedded as base64, so the one file opens anywhere. The text holds only
aggregate measures, counts, column names and thresholds: never a real patient's row or id.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from diffusion.data.schema import Schema
from evaluation.catalog import HEADLINE, measure
from evaluation.gates import DESCRIPTIONS

BETTER = {"lower": "lower", "higher": "higher", "half": "0.5 fair, higher = nearer training", "reference": "reference"}

SECTIONS = [
    (
        "Marginals and correlations",
        ["marginals", "correlations", "coverage"],
        "Static columns are compared one value per patient, temporal ones one value per visit; each static "
        "subgroup should appear at its real share.",
    ),
    (
        "Trajectories",
        ["trajectories", "temporal", "trend_cycle", "sequence_lengths"],
        "Static scores can look fine while trajectories are wrong, so the report compares how values move within "
        "patients: lag-1 autocorrelation, label transitions, and the Health Gym trend and cycle correlations.",
    ),
    ("Privacy", ["privacy"], "Distances to the closest real training patient on standardised patient-level features."),
    ("Training", ["loss_curve"], ""),
]

GROUPS = [
    ("fidelity.", "Fidelity"),
    ("temporal.", "Temporal"),
    ("missing.", "Missing values"),
    ("coverage.", "Subgroup coverage"),
    ("validity.", "Validity"),
    ("discriminator", "Discrimination"),
    ("utility.", "Utility"),
    ("privacy.", "Privacy"),
]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;color:#222;padding:0 16px}
h1{font-size:24px} h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px} h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #d0d0d0;padding:3px 9px;font-size:13px;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pass td.st{background:#dff5df} tr.fail td.st{background:#fbdcdc;font-weight:bold} tr.skip td.st{background:#fff2cc}
.verdict{padding:12px 16px;border-radius:6px;font-size:16px;margin:12px 0} .ok{background:#dff5df} .bad{background:#fbdcdc}
img{max-width:100%;border:1px solid #eee;margin:6px 0} .note{color:#555;font-size:13px} details{margin:8px 0}
"""


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _gates_table(result) -> str:
    rows = []
    for g in result.gates:
        css = "pass" if g.passed and g.evaluated else ("skip" if not g.evaluated else "fail")
        rows.append(
            f"<tr class='{css}'><td>{html.escape(g.name)}</td><td>{html.escape(DESCRIPTIONS.get(g.name, ''))}</td>"
            f"<td class='num'>{fmt(g.value)}</td><td>{g.direction} {g.threshold:g}</td>"
            f"<td class='num'>{fmt(result.calibration.get(g.name))}</td><td class='st'>{html.escape(g.status)}</td>"
            f"<td>{html.escape(g.note)}</td></tr>"
        )
    return (
        "<table><tr><th>measure</th><th>what it checks</th><th>synthetic</th><th>rule</th><th>real-vs-real floor</th>"
        "<th>result</th><th>note</th></tr>" + "".join(rows) + "</table>"
    )


def _interval(result, k: str) -> str:
    lo, hi = result.metrics.get(f"{k}.ci_low"), result.metrics.get(f"{k}.ci_high")
    return f"{fmt(lo)} &ndash; {fmt(hi)}" if lo is not None and hi is not None else ""


def _headline(result) -> str:
    rows = []
    for k in HEADLINE:
        m = measure(k)
        if k not in result.metrics or m is None:
            continue
        rows.append(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(m.description)}</td><td class='num'>{fmt(result.metrics.get(k))}</td>"
            f"<td class='num'>{_interval(result, k)}</td><td class='num'>{fmt(result.calibration.get(k))}</td>"
            f"<td>{html.escape(BETTER[m.better])}</td></tr>"
        )
    return (
        "<table><tr><th>measure</th><th>meaning</th><th>synthetic</th><th>95% interval</th><th>real-vs-real floor</th>"
        "<th>better</th></tr>" + "".join(rows) + "</table>"
    )


def _all_measures(result) -> str:
    out = []
    keys = sorted(set(result.metrics) | set(result.calibration))
    for prefix, title in GROUPS:
        mine = [k for k in keys if k.startswith(prefix)]
        if not mine:
            continue
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td class='num'>{fmt(result.metrics.get(k))}</td>"
            f"<td class='num'>{fmt(result.calibration.get(k))}</td></tr>"
            for k in mine
        )
        out.append(
            f"<details{' open' if prefix in ('discriminator', 'privacy.') else ''}><summary><b>{title}</b> "
            f"({len(mine)} measures)</summary><table><tr><th>measure</th><th>synthetic</th>"
            f"<th>real-vs-real floor</th></tr>{rows}</table></details>"
        )
    return "".join(out)


def _unmeasured(result) -> str:
    """The measure families that could not be computed on these data, and why."""
    rows = [(k, v, "synthetic") for k, v in result.unmeasured.items()]
    rows += [(k, v, "real-vs-real floor") for k, v in result.floor_unmeasured.items()]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(side)}</td><td>{html.escape(v)}</td></tr>" for k, v, side in rows
    )
    return (
        "<h2>Not measurable</h2><p class='note'>These measures could not be computed on these data; a gate that "
        "reads one blocks the release.</p><table><tr><th>measures</th><th>for</th><th>reason</th></tr>" + body + "</table>"
    )


def _img(name: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<h3>{html.escape(name.replace('_', ' '))}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'/>"


def _provenance(provenance: dict[str, str] | None) -> str:
    if not provenance:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in provenance.items())
    return f"<h2>Model</h2><table>{rows}</table>"


def write_report(result, schema: Schema, path: Path, *, counts: dict[str, int], provenance: dict[str, str] | None = None) -> Path:
    verdict = "All release gates passed." if result.passed else "Release blocked: " + html.escape(result.failed_gates_message())
    holdout = counts.get("holdout_patients", 0)
    intro = (
        f"{counts['synthetic_patients']:,} synthetic patients ({counts['synthetic_visits']:,} visits) judged against "
        f"{counts['real_patients']:,} real training patients ({counts['real_visits']:,} visits)"
    )
    intro += (
        f" and {holdout:,} real holdout patients the model never saw. Fidelity is judged against the holdout: the "
        "<i>synthetic</i> column compares the synthetic patients (as many as the training patients) with the holdout, "
        "the <i>real-vs-real floor</i> column the training patients with the same holdout: what a generator as "
        "good as fresh real patients scores, noise included; a synthetic set far better than the floor is suspect. "
        "Privacy measures compare the synthetic patients with the training patients and the holdout, each with its "
        "bootstrap 95% interval; their floor is half the holdout posing as the synthetic set. Real values are shown "
        "only after value protection (numbers cut at the k-th most extreme patient)."
        if holdout
        else ". No real holdout was given: fidelity is judged against the training patients, and utility "
        "and privacy could not be judged."
    )
    sections = []
    used = set()
    for title, names, note in SECTIONS:
        figs = [(n, result.figures[n]) for n in names if n in result.figures]
        used.update(n for n, _ in figs)
        if figs:
            sections.append(
                f"<h2>{title}</h2>" + (f"<p class='note'>{note}</p>" if note else "") + "".join(_img(n, p) for n, p in figs)
            )
    extra = [(n, p) for n, p in result.figures.items() if n not in used]
    if extra:
        sections.append("<h2>Other figures</h2>" + "".join(_img(n, p) for n, p in extra))
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Health Gym evaluation: {html.escape(schema.name)}</title>
<style>{CSS}</style></head><body>
<h1>Health Gym synthetic data evaluation: {html.escape(schema.name)}</h1>
<p>{intro}</p>
<div class="verdict {"ok" if result.passed else "bad"}">{verdict}</div>
<p>{html.escape(result.privacy_note())}</p>
<h2>Release gates</h2>{_gates_table(result)}
{_unmeasured(result)}
{_provenance(provenance)}
<h2>Headline measures</h2>{_headline(result)}
{"".join(sections)}
<h2>Every measure</h2>{_all_measures(result)}
<p class="note">This report holds aggregate measures and distribution plots only; it quotes no real patient's values or
identifiers. Real patients appear in the trajectory plot only as per-visit quantile bands over at least 10 patients.</p>
</body></html>"""
    path.write_text(doc, encoding="utf-8")
    return path
