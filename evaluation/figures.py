"""Figures for the report (matplotlib, Agg backend, PNG).

Only distributions and aggregates of real patients are drawn: histograms, bar charts,
correlation matrices, and per-visit quantile bands computed over at least `MIN_BAND`
patients. Individual trajectories are drawn for synthetic patients only.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from diffusion.data.schema import Schema  # noqa: E402
from evaluation.data import PID, POS, discrete_temporal, numeric_temporal  # noqa: E402
from evaluation.fidelity import column_values, correlation_matrix  # noqa: E402
from evaluation.temporal import trend_cycle as trend_cycle_matrices  # noqa: E402

REAL, SYN, HOLD = "#1f77b4", "#ff7f0e", "#7f7f7f"
MIN_BAND = 10  # fewest real patients behind any plotted real quantile


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def _heat(ax, m: pd.DataFrame, title: str, cmap: str = "coolwarm"):
    im = ax.imshow(m.to_numpy(float), vmin=-1, vmax=1, cmap=cmap)
    ax.set_xticks(range(len(m)), m.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(m)), m.index, fontsize=7)
    ax.set_title(title, fontsize=9)
    return im


def marginals(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, path: Path) -> Path:
    cols = schema.columns
    ncol = min(4, len(cols))
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.5 * nrow), squeeze=False)
    for ax, col in zip(axes.ravel(), cols):
        a, b = column_values(real, schema, col.name), column_values(syn, schema, col.name)
        if col.numeric:
            both = np.r_[a.to_numpy(float), b.to_numpy(float)]
            both = both[np.isfinite(both)]
            lo, hi = np.percentile(both, [0.5, 99.5]) if len(both) else (0.0, 1.0)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            ax.hist(a.clip(lo, hi), bins=bins, alpha=0.55, density=True, color=REAL, label="real")
            ax.hist(b.clip(lo, hi), bins=bins, alpha=0.55, density=True, color=SYN, label="synthetic")
            ax.set_yticks([])
        else:
            pa, pb = a.astype(str).value_counts(normalize=True), b.astype(str).value_counts(normalize=True)
            idx = sorted(pa.index.union(pb.index))
            x = np.arange(len(idx))
            ax.bar(x - 0.2, pa.reindex(idx, fill_value=0), 0.4, color=REAL, label="real")
            ax.bar(x + 0.2, pb.reindex(idx, fill_value=0), 0.4, color=SYN, label="synthetic")
            ax.set_xticks(x, [str(i).removesuffix(".0") for i in idx], fontsize=7)
        ax.set_title(col.name + (" (static, per patient)" if col.static else " (per visit)"), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(cols) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("Marginal distributions: real training patients vs synthetic", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def correlations(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, path: Path) -> Path | None:
    cr, cs = correlation_matrix(real, schema), correlation_matrix(syn, schema)
    if len(cr) < 2:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, m, title in zip(axes, (cr, cs, cs - cr), ("real", "synthetic", "synthetic - real")):
        im = _heat(ax, m, f"Spearman correlation over visits: {title}")
    fig.colorbar(im, ax=axes, shrink=0.75)
    return _save(fig, path)


def trend_cycle(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, path: Path, window: int) -> Path | None:
    if len(numeric_temporal(schema)) < 2:
        return None
    (rt, rc), (st, sc) = trend_cycle_matrices(real, schema, window), trend_cycle_matrices(syn, schema, window)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.5))
    for row, (name, r, s) in enumerate((("trend", rt, st), ("cycle", rc, sc))):
        for ax, m, title in zip(axes[row], (r, s, s - r), ("real", "synthetic", "synthetic - real")):
            im = _heat(ax, m, f"within-patient {name} correlation: {title}")
    fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(
        f"Health Gym dynamic correlations (trend = {window}-visit moving average, cycle = residual; "
        "Fisher-z averaged over patients)",
        fontsize=10,
    )
    return _save(fig, path)


def trajectories(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, path: Path, examples: int, seed: int) -> Path | None:
    labs = [c.name for c in numeric_temporal(schema)][:8]
    if not labs:
        return None
    ncol = min(4, len(labs))
    nrow = math.ceil(len(labs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.9 * ncol, 2.9 * nrow), squeeze=False)
    lengths = syn.groupby(PID).size()
    pool = lengths[lengths >= 3].index if (lengths >= 3).any() else lengths.index
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.asarray(pool), size=min(examples, len(pool)), replace=False) if len(pool) else []
    for ax, lab in zip(axes.ravel(), labs):
        # real patients only as quantile bands per visit index, where enough patients are behind them
        grp = real.groupby(POS)[lab]
        q = grp.quantile([0.1, 0.25, 0.5, 0.75, 0.9]).unstack()
        q = q[grp.count().reindex(q.index) >= MIN_BAND]
        if len(q):
            ax.fill_between(q.index, q[0.1], q[0.9], alpha=0.15, color=REAL, label="real 10-90%")
            ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.3, color=REAL, label="real 25-75%")
            ax.plot(q.index, q[0.5], color=REAL, lw=2, label="real median")
        for i, pid in enumerate(chosen):
            sel = syn[PID] == pid
            ax.plot(
                syn.loc[sel, POS],
                syn.loc[sel, lab],
                color=SYN,
                alpha=0.8,
                lw=1,
                marker=".",
                ms=3,
                label="synthetic patients" if i == 0 else None,
            )
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("visit number", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(labs) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle(
        "Example synthetic trajectories over the real population's per-visit bands (no real individual shown)", fontsize=10
    )
    fig.tight_layout()
    return _save(fig, path)


def temporal(metrics: dict[str, float], calibration: dict[str, float], schema: Schema, path: Path) -> Path | None:
    nums = [c.name for c in numeric_temporal(schema)]
    cats = [c.name for c in discrete_temporal(schema)]
    if not nums and not cats:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), squeeze=False)
    for ax, names, key, title in (
        (axes[0][0], nums, "lag1", "lag-1 autocorrelation within patients"),
        (axes[0][1], cats, "stay_prob", "probability of keeping the same label at the next visit"),
    ):
        if not names:
            ax.axis("off")
            continue
        x = np.arange(len(names))
        series = [("real", metrics, "real", REAL), ("synthetic", metrics, "synthetic", SYN)]
        if calibration:  # with a holdout, "real" is the holdout and the floor's "synthetic" the training patients
            series = [
                ("real holdout", metrics, "real", REAL),
                ("synthetic", metrics, "synthetic", SYN),
                ("real training", calibration, "synthetic", HOLD),
            ]
        w = 0.8 / len(series)
        for i, (label, src, side, color) in enumerate(series):
            vals = [src.get(f"temporal.{key}.{side}.{n}", np.nan) for n in names]
            ax.bar(x + (i - (len(series) - 1) / 2) * w, vals, w, label=label, color=color)
        ax.set_xticks(x, names, rotation=45, fontsize=7, ha="right")
        ax.set_ylim(min(0, ax.get_ylim()[0]), 1.05)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def lengths_and_gaps(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
    lr, ls = real.groupby(PID).size(), syn.groupby(PID).size()
    bins = np.arange(0.5, max(lr.max(), ls.max()) + 1.5)
    axes[0].hist(lr, bins=bins, alpha=0.55, density=True, color=REAL, label="real")
    axes[0].hist(ls, bins=bins, alpha=0.55, density=True, color=SYN, label="synthetic")
    axes[0].set_title("visits per patient", fontsize=9)
    axes[0].legend(fontsize=7)
    gr = real.groupby(PID)[schema.time].diff().dropna()
    gs = syn.groupby(PID)[schema.time].diff().dropna()
    if len(gr) and len(gs):
        hi = float(np.nanpercentile(np.r_[gr, gs], 99))
        lo = float(min(0.0, np.nanmin(np.r_[gr, gs])))
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        axes[1].hist(gr.clip(lo, hi), bins=edges, alpha=0.55, density=True, color=REAL, label="real")
        axes[1].hist(gs.clip(lo, hi), bins=edges, alpha=0.55, density=True, color=SYN, label="synthetic")
        axes[1].set_yticks([])
    axes[1].set_title(f"gap between consecutive visits ({schema.time})", fontsize=9)
    return _save(fig, path)


def privacy(dist: dict[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    both = np.r_[dist["synthetic"], dist["holdout"]]
    hi = float(np.percentile(both, 99)) if len(both) else 1.0
    edges = np.linspace(0, hi if hi > 0 else 1, 40)
    ax.hist(np.clip(dist["holdout"], 0, hi), bins=edges, alpha=0.55, density=True, color=HOLD, label="real holdout patients")
    ax.hist(np.clip(dist["synthetic"], 0, hi), bins=edges, alpha=0.55, density=True, color=SYN, label="synthetic patients")
    ax.set_xlabel("distance to the closest real training patient (standardised patient features)", fontsize=8)
    ax.set_yticks([])
    ax.set_title(
        "Distance to the closest training patient:\nsynthetic patients should not sit closer than unseen real patients do",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def coverage(metrics: dict[str, float], band: float, path: Path) -> Path | None:
    """Each static subgroup's synthetic / real share ratio against the coverage band."""
    keys = [k for k in metrics if k.startswith("coverage.share_ratio.") and not k.endswith(("_low", "_high"))]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.22 * len(keys)))
    names = [k.split("coverage.share_ratio.", 1)[1] for k in keys]
    ratio = np.array([metrics[k] for k in keys])
    lo = np.array([metrics.get(f"{k}.ci_low", metrics[k]) for k in keys])
    hi = np.array([metrics.get(f"{k}.ci_high", metrics[k]) for k in keys])
    ax.barh(range(len(names)), ratio, color=SYN, xerr=[ratio - lo, hi - ratio], ecolor="#444", capsize=2)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvspan(1 / band, band, color="#2ca02c", alpha=0.12, label=f"band [{1 / band:.2f}, {band:.2f}]")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("synthetic share / real share", fontsize=8)
    ax.set_title("Static subgroups: each should appear at its real share (bars: 95% interval)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def loss_curve(history: list[dict], path: Path) -> Path | None:
    h = pd.DataFrame(history)
    if "step" not in h or h.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.3))
    positive = True
    for key, label in (("loss", "training loss"), ("val_loss", "validation loss")):
        if key in h and pd.to_numeric(h[key], errors="coerce").notna().any():
            v = pd.to_numeric(h[key], errors="coerce")
            ok = v.notna()
            positive &= bool((v[ok] > 0).all())
            ax.plot(h.loc[ok, "step"], v[ok], marker="." if ok.sum() < 50 else None, label=label)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("training step", fontsize=8)
    ax.set_title("Training loss and memorisation signal", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    if "train_dcr_share" in h and pd.to_numeric(h["train_dcr_share"], errors="coerce").notna().any():
        share = pd.to_numeric(h["train_dcr_share"], errors="coerce")
        ok = share.notna()
        right = ax.twinx()  # the signal on its own axis: 0.5 fair, 1 copying
        right.plot(h.loc[ok, "step"], share[ok], color="#c0392b", marker=".", label="generated nearer training than validation")
        right.axhline(0.5, color="#c0392b", lw=0.6, ls=":")
        right.set_ylim(0, 1)
        right.tick_params(labelsize=7)
        right.legend(fontsize=7, loc="upper right")
    return _save(fig, path)
