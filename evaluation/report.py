"""`evaluate`: every measure, the calibration floor, the gates, figures and a self-contained report."""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from diffusion.config import EvaluationConfig  # noqa: E402
from diffusion.schema import Schema  # noqa: E402
from evaluation import measures as M  # noqa: E402


@dataclass
class GateResult:
    name: str
    value: float | None
    threshold: float
    passed: bool
    direction: str  # "<=" or ">="
    note: str = ""


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    calibration: dict[str, float]
    gates: list[GateResult]
    passed: bool
    figures: dict[str, Path] = field(default_factory=dict)
    report_path: Path | None = None
    metrics_path: Path | None = None

    def failed_gates_message(self) -> str:
        failed = [g for g in self.gates if not g.passed]
        if not failed:
            return "Every release gate passed."
        parts = [f"{g.name} = {_fmt(g.value)} (must be {g.direction} {g.threshold:g}{'; ' + g.note if g.note else ''})" for g in failed]
        return f"The synthetic data failed {len(failed)} release gate(s), so no release is made: " + "; ".join(parts) + "."


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def compute(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, holdout: pd.DataFrame | None, cfg: EvaluationConfig,
            *, privacy: bool = True) -> dict[str, float]:
    """All measures of `syn` against `real` (tidy frames)."""
    out: dict[str, float] = {}
    out.update(M.validity(syn, schema))
    out.update(M.marginals(real, syn, schema))
    out.update(M.correlations(real, syn, schema))
    out.update(M.temporal(real, syn, schema))
    out.update(M.dynamic_correlations(real, syn, schema))
    out.update(M.sdmetrics_quality(real, syn, schema))
    out["discriminator_auc"] = M.discriminator_auc(real, syn, schema, seed=cfg.seed, folds=cfg.discriminator_folds)
    if holdout is not None and len(holdout):
        if privacy:
            out.update(M.utility(real, syn, holdout, schema, seed=cfg.seed))
            out.update(M.privacy(real, syn, holdout, schema, seed=cfg.seed, subsample=cfg.privacy_subsample))
    return out


def gates(metrics: dict[str, float], cfg: EvaluationConfig, has_holdout: bool) -> list[GateResult]:
    g = cfg.gates
    spec = [
        ("validity.static_consistency", ">=", g.min_static_consistency, False),
        ("validity.time_order", ">=", g.min_time_order, False),
        ("fidelity.quality_score", ">=", g.min_quality_score, False),
        ("discriminator_auc", "<=", g.max_discriminator_auc, False),
        ("privacy.dcr_share", "<=", g.max_dcr_share, True),
        ("privacy.mia_auc", "<=", g.max_mia_auc, True),
        ("privacy.exact_copies", "<=", float(g.max_exact_copies), True),
    ]
    out = []
    for name, direction, threshold, needs_holdout in spec:
        value = metrics.get(name)
        if needs_holdout and not has_holdout:
            out.append(GateResult(name, None, threshold, False, direction, "not evaluated: needs real holdout patients"))
            continue
        ok = value is not None and not math.isnan(value) and (value <= threshold if direction == "<=" else value >= threshold)
        out.append(GateResult(name, value, threshold, bool(ok), direction))
    return out


# ---- figures ------------------------------------------------------------------------------------
def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def figures(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, out: Path, loss_history: list[dict] | None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    cols = schema.columns
    ncol = 4
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.8 * nrow))
    rs, ss = real.groupby(schema.id).first(), syn.groupby(schema.id).first()
    for ax, col in zip(np.ravel(axes), cols):
        a = (rs if col.static else real)[col.name].dropna()
        b = (ss if col.static else syn)[col.name].dropna()
        if col.numeric:
            lo, hi = np.nanpercentile(np.r_[a, b], [0.5, 99.5]) if len(a) + len(b) else (0, 1)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            ax.hist(a, bins=bins, alpha=0.5, density=True, label="real")
            ax.hist(b, bins=bins, alpha=0.5, density=True, label="synthetic")
        else:
            pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
            idx = pa.index.union(pb.index)
            x = np.arange(len(idx))
            ax.bar(x - 0.2, pa.reindex(idx, fill_value=0), 0.4, label="real")
            ax.bar(x + 0.2, pb.reindex(idx, fill_value=0), 0.4, label="synthetic")
            ax.set_xticks(x, [str(i) for i in idx], fontsize=7)
        ax.set_title(col.name + (" (static)" if col.static else ""), fontsize=9)
    for ax in np.ravel(axes)[len(cols):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=7)
    figs["marginals"] = _save(fig, out / "marginals.png")

    cr, cs = M.correlation_matrix(real, schema), M.correlation_matrix(syn, schema)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, m, title in zip(axes, (cr, cs, cs - cr), ("real", "synthetic", "synthetic - real")):
        im = ax.imshow(m.to_numpy(), vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_xticks(range(len(m)), m.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(m)), m.columns, fontsize=7)
        ax.set_title(f"Spearman correlation: {title}", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.7)
    fig.savefig(out / "correlations.png", dpi=90)
    plt.close(fig)
    figs["correlations"] = out / "correlations.png"

    (rt, rc), (st, sc) = M.trend_cycle(real, schema), M.trend_cycle(syn, schema)
    if len(rt) >= 2:
        fig, axes = plt.subplots(2, 2, figsize=(11, 10))
        for ax, m, title in zip(np.ravel(axes), (rt, st, rc, sc), ("trend: real", "trend: synthetic", "cycle: real", "cycle: synthetic")):
            ax.imshow(m.to_numpy(), vmin=-1, vmax=1, cmap="coolwarm")
            ax.set_xticks(range(len(m)), m.columns, rotation=90, fontsize=7)
            ax.set_yticks(range(len(m)), m.columns, fontsize=7)
            ax.set_title(f"within-patient {title}", fontsize=10)
        figs["trend_cycle"] = _save(fig, out / "trend_cycle.png")

    labs = [c.name for c in schema.temporal_columns if c.numeric][:6]
    if labs:
        fig, axes = plt.subplots(1, len(labs), figsize=(4 * len(labs), 3.2), squeeze=False)
        pos_r = real.groupby(schema.id).cumcount()
        pos_s = syn.groupby(schema.id).cumcount()
        example = syn[schema.id].drop_duplicates().iloc[:5]
        for ax, lab in zip(axes[0], labs):
            # real patients only as aggregate bands (median, IQR per visit index): no individual trajectory
            q = real.groupby(pos_r)[lab].quantile([0.25, 0.5, 0.75]).unstack()
            ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.25, color="C0", label="real IQR")
            ax.plot(q.index, q[0.5], color="C0", label="real median")
            for pid in example:
                sel = syn[schema.id] == pid
                ax.plot(pos_s[sel], syn.loc[sel, lab], color="C1", alpha=0.6, lw=1)
            ax.set_title(lab, fontsize=9)
            ax.set_xlabel("visit", fontsize=8)
        axes[0][0].plot([], [], color="C1", label="synthetic patients")
        axes[0][0].legend(fontsize=7)
        figs["trajectories"] = _save(fig, out / "trajectories.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    lr, ls = real.groupby(schema.id).size(), syn.groupby(schema.id).size()
    bins = np.arange(0.5, max(lr.max(), ls.max()) + 1.5)
    axes[0].hist(lr, bins=bins, alpha=0.5, density=True, label="real")
    axes[0].hist(ls, bins=bins, alpha=0.5, density=True, label="synthetic")
    axes[0].set_title("visits per patient", fontsize=9)
    axes[0].legend(fontsize=7)
    gr = real.groupby(schema.id)[schema.time].diff().dropna()
    gs = syn.groupby(schema.id)[schema.time].diff().dropna()
    if len(gr) and len(gs):
        hi = np.nanpercentile(np.r_[gr, gs], 99)
        axes[1].hist(gr, bins=np.linspace(0, hi, 30), alpha=0.5, density=True, label="real")
        axes[1].hist(gs, bins=np.linspace(0, hi, 30), alpha=0.5, density=True, label="synthetic")
    axes[1].set_title(f"gap between visits ({schema.time})", fontsize=9)
    figs["sequence_lengths"] = _save(fig, out / "sequence_lengths.png")

    if loss_history:
        h = pd.DataFrame(loss_history)
        fig, ax = plt.subplots(figsize=(7, 3.2))
        if "loss" in h:
            ax.plot(h["step"], h["loss"], label="training loss (smoothed)")
        if "val_loss" in h:
            ax.plot(h["step"], h["val_loss"], label="validation loss (EMA)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.set_title("training", fontsize=9)
        figs["loss_curve"] = _save(fig, out / "loss_curve.png")
    return figs


def write_report(result: EvaluationResult, schema: Schema, out: Path, *, n_real: int, n_syn: int) -> Path:
    rows = []
    for k in sorted(result.metrics):
        cal = result.calibration.get(k)
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(result.metrics[k])}</td><td>{_fmt(cal)}</td></tr>")
    gate_rows = "".join(
        f"<tr class='{'ok' if g.passed else 'bad'}'><td>{html.escape(g.name)}</td><td>{_fmt(g.value)}</td><td>{g.direction} {g.threshold:g}</td>"
        f"<td>{'pass' if g.passed else 'FAIL'}</td><td>{html.escape(g.note)}</td></tr>" for g in result.gates)
    imgs = "".join(
        f"<h3>{html.escape(name.replace('_', ' '))}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'/>" for name, path in result.figures.items())
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Health Gym report: {html.escape(schema.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1500px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
tr.ok td{{background:#eaffea}} tr.bad td{{background:#ffe8e8}} img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>Health Gym synthetic data report: {html.escape(schema.name)}</h1>
<p>{n_syn} synthetic patients judged against {n_real} real training patients. Verdict: <b>{'all release gates passed' if result.passed else 'release blocked'}</b>.
The calibration column gives the same measure for real holdout patients against the training patients: the floor a perfect generator would reach.</p>
<h2>Release gates</h2><table><tr><th>measure</th><th>value</th><th>rule</th><th>result</th><th>note</th></tr>{gate_rows}</table>
<h2>Figures</h2>{imgs}
<h2>All measures</h2><table><tr><th>measure</th><th>synthetic</th><th>calibration (real holdout)</th></tr>{''.join(rows)}</table>
</body></html>"""
    path = out / "report.html"
    path.write_text(doc)
    return path


def evaluate(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Schema, *, holdout: pd.DataFrame | None = None,
             config: EvaluationConfig | None = None, loss_history: list[dict] | None = None,
             out_dir: Path | None = None) -> EvaluationResult:
    """Judge `synthetic` against the real training patients (and the real holdout, when given).

    Without a holdout, privacy and utility measures are skipped and their gates are reported
    as failed with the note "not evaluated", so a release is never made without them.
    """
    cfg = config or EvaluationConfig()
    started = time.monotonic()
    r, s = M.tidy(real, schema), M.tidy(synthetic, schema)
    h = M.tidy(holdout, schema) if holdout is not None and len(holdout) else None
    metrics = compute(r, s, schema, h, cfg)
    calibration = compute(r, h, schema, None, cfg, privacy=False) if h is not None else {}
    metrics["evaluation.seconds"] = time.monotonic() - started
    gate_results = gates(metrics, cfg, h is not None)
    result = EvaluationResult(metrics=metrics, calibration=calibration, gates=gate_results, passed=all(g.passed for g in gate_results))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.figures = figures(r, s, schema, out_dir / "figures", loss_history)
        result.metrics_path = out_dir / "metrics.json"
        result.metrics_path.write_text(json.dumps({
            "metrics": metrics, "calibration": calibration, "passed": result.passed,
            "gates": [g.__dict__ for g in gate_results],
        }, indent=2, default=float))
        result.report_path = write_report(result, schema, out_dir, n_real=r[schema.id].nunique(), n_syn=s[schema.id].nunique())
    return result


def evaluate_files(real_path, synthetic_path, schema_path, out_dir, *, holdout_path=None, config: EvaluationConfig | None = None) -> EvaluationResult:
    from expectations.reading import read_extract

    schema = Schema.load(schema_path)
    holdout = read_extract(holdout_path) if holdout_path else None
    return evaluate(read_extract(real_path), read_extract(synthetic_path), schema, holdout=holdout, config=config, out_dir=Path(out_dir))
