"""Fidelity, temporal and validity measures of a synthetic set against real patients.

Pure functions of tidy frames (see `evaluation.data.tidy`) and the schema; no randomness.
Metric names are flat strings, grouped by prefix:

- ``fidelity.*``: marginals (``ks_complement.<col>`` for numbers, ``tv_complement.<col>`` for
  labels, static columns compared patient by patient), ``marginal_score`` (their mean),
  ``correlation_abs_diff`` (mean |Spearman real - synthetic| over column pairs, visit level).
- ``temporal.*``: ``lag1.{real,synthetic}.<col>`` and ``lag1_abs_diff.<col>`` (lag-1
  autocorrelation within patients), ``.mean``/``.max`` over columns; ``lag1_rank.*`` and
  ``lag1_rank_abs_diff.<col>`` the same with Spearman's rank correlation (robust to outliers);
  ``stay_prob.{real,synthetic}.<col>``, ``stay_prob_abs_diff.<col>`` and ``transition_tvd.<col>``
  for temporal labels; ``length_tvd`` (visits per patient), ``gap_ks`` (gaps between visits);
  ``trend_corr_abs_diff`` / ``cycle_corr_abs_diff`` (Health Gym dynamic correlations).
- ``missing.*``: ``rate.{real,synthetic}.<col>``, ``rate_abs_diff.<col>`` and ``.max``.
- ``validity.*`` (synthetic only): ``static_consistency``, ``time_order``, ``in_bounds``,
  ``in_categories``.

Similarity scores (complements) are 1 for identical data; differences are 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from diffusion.schema import Schema
from evaluation.data import PID, POS, discrete_temporal, numeric_temporal, patient_static


def _tv(a: pd.Series, b: pd.Series) -> float:
    pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
    idx = pa.index.union(pb.index)
    return 0.5 * float((pa.reindex(idx, fill_value=0) - pb.reindex(idx, fill_value=0)).abs().sum())


def _ks(a: pd.Series, b: pd.Series) -> float:
    return float(stats.ks_2samp(a.to_numpy(float), b.to_numpy(float)).statistic)


# ---- marginals and correlations --------------------------------------------------------------------
def column_values(df: pd.DataFrame, schema: Schema, name: str) -> pd.Series:
    """A column's observed values: one per patient for static columns, one per visit otherwise."""
    col = schema.column(name)
    s = patient_static(df, schema)[name] if col.static else df[name]
    return s.dropna()


def marginals(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """KS complement (numbers) / TV complement (binaries and labels) per column."""
    out: dict[str, float] = {}
    for col in schema.columns:
        a, b = column_values(real, schema, col.name), column_values(syn, schema, col.name)
        if len(a) == 0 or len(b) == 0:
            continue
        if col.numeric:
            out[f"fidelity.ks_complement.{col.name}"] = 1.0 - _ks(a, b)
        else:
            out[f"fidelity.tv_complement.{col.name}"] = 1.0 - _tv(a, b)
    out["fidelity.marginal_score"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def correlation_matrix(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Spearman correlations of numeric and binary columns over visits."""
    cols = [c.name for c in schema.columns if c.numeric or c.type == "binary"]
    return df[cols].astype(float).corr(method="spearman")


def _upper_abs_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    if len(a) < 2:
        return float("nan")
    iu = np.triu_indices(len(a), 1)
    d = np.abs(a.to_numpy()[iu] - b.to_numpy()[iu])
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


def correlations(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    return {"fidelity.correlation_abs_diff": _upper_abs_diff(correlation_matrix(real, schema), correlation_matrix(syn, schema))}


# ---- temporal ---------------------------------------------------------------------------------------
def _previous(df: pd.DataFrame, column: str) -> pd.Series:
    return df.groupby(PID, sort=False)[column].shift(1)


def lag1(df: pd.DataFrame, column: str, *, rank: bool = False) -> float:
    """Lag-1 autocorrelation within patients: Pearson correlation over pairs of consecutive visits
    (`rank=True`: Spearman, which a handful of extreme visits cannot dominate)."""
    v, prev = df[column].astype(float), _previous(df, column).astype(float)
    ok = v.notna() & prev.notna()
    if ok.sum() < 3 or v[ok].std() == 0 or prev[ok].std() == 0:
        return float("nan")
    if rank:
        return float(stats.spearmanr(v[ok], prev[ok]).statistic)
    return float(np.corrcoef(v[ok], prev[ok])[0, 1])


def transitions(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Counts of (previous label -> next label) over consecutive visits."""
    v, prev = df[column], _previous(df, column)
    ok = v.notna() & prev.notna()
    return pd.crosstab(prev[ok].astype(str), v[ok].astype(str))


def _transition_stats(real: pd.DataFrame, syn: pd.DataFrame, column: str) -> tuple[float, float, float]:
    tr, ts = transitions(real, column), transitions(syn, column)
    stay = []
    for t in (tr, ts):
        total = t.to_numpy().sum()
        diag = sum(t.loc[k, k] for k in t.index if k in t.columns)
        stay.append(float(diag / total) if total else float("nan"))
    if tr.to_numpy().sum() == 0 or ts.to_numpy().sum() == 0:
        return stay[0], stay[1], float("nan")
    labels = tr.index.union(ts.index).union(tr.columns).union(ts.columns)
    pr = tr.reindex(index=labels, columns=labels, fill_value=0)
    ps = ts.reindex(index=labels, columns=labels, fill_value=0)
    weight = pr.sum(axis=1) / pr.to_numpy().sum()  # real frequency of the previous label
    rows_r = pr.div(pr.sum(axis=1).replace(0, np.nan), axis=0)
    rows_s = ps.div(ps.sum(axis=1).replace(0, np.nan), axis=0)
    # a previous label synthetic never leaves from counts as fully different
    tvd = (0.5 * (rows_r - rows_s).abs().sum(axis=1)).where(rows_s.notna().any(axis=1), 1.0)
    return stay[0], stay[1], float((tvd.fillna(0) * weight).sum())


def temporal(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    out: dict[str, float] = {}
    diffs = []
    for col in numeric_temporal(schema):
        r, s = lag1(real, col.name), lag1(syn, col.name)
        out[f"temporal.lag1.real.{col.name}"] = r
        out[f"temporal.lag1.synthetic.{col.name}"] = s
        d = abs(r - s) if np.isfinite(r) and np.isfinite(s) else float("nan")
        out[f"temporal.lag1_abs_diff.{col.name}"] = d
        diffs.append(d)
        r, s = lag1(real, col.name, rank=True), lag1(syn, col.name, rank=True)
        out[f"temporal.lag1_rank.real.{col.name}"] = r
        out[f"temporal.lag1_rank.synthetic.{col.name}"] = s
        out[f"temporal.lag1_rank_abs_diff.{col.name}"] = abs(r - s) if np.isfinite(r) and np.isfinite(s) else float("nan")
    if np.isfinite(diffs).any():
        out["temporal.lag1_abs_diff.mean"] = float(np.nanmean(diffs))
        out["temporal.lag1_abs_diff.max"] = float(np.nanmax(diffs))
    stays, tvds = [], []
    for col in discrete_temporal(schema):
        r, s, tvd = _transition_stats(real, syn, col.name)
        out[f"temporal.stay_prob.real.{col.name}"] = r
        out[f"temporal.stay_prob.synthetic.{col.name}"] = s
        out[f"temporal.stay_prob_abs_diff.{col.name}"] = abs(r - s)
        out[f"temporal.transition_tvd.{col.name}"] = tvd
        stays.append(abs(r - s))
        tvds.append(tvd)
    if np.isfinite(stays).any():
        out["temporal.stay_prob_abs_diff.max"] = float(np.nanmax(stays))
    if np.isfinite(tvds).any():
        out["temporal.transition_tvd.mean"] = float(np.nanmean(tvds))
    out["temporal.length_tvd"] = _tv(real.groupby(PID).size(), syn.groupby(PID).size())
    gr = real.groupby(PID)[schema.time].diff().dropna()
    gs = syn.groupby(PID)[schema.time].diff().dropna()
    if len(gr) and len(gs):
        out["temporal.gap_ks"] = _ks(gr, gs)
    return out


def missingness(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """Missing rate per nullable column (static ones per patient), real vs synthetic, in rate units."""
    out: dict[str, float] = {}
    diffs = []
    rs, ss = patient_static(real, schema), patient_static(syn, schema)
    for col in schema.columns:
        if not col.nullable:
            continue
        r = float((rs if col.static else real)[col.name].isna().mean())
        s = float((ss if col.static else syn)[col.name].isna().mean())
        out[f"missing.rate.real.{col.name}"] = r
        out[f"missing.rate.synthetic.{col.name}"] = s
        out[f"missing.rate_abs_diff.{col.name}"] = abs(r - s)
        diffs.append(abs(r - s))
    if diffs:
        out["missing.rate_abs_diff.max"] = float(max(diffs))
    return out


# ---- Health Gym dynamic correlations -----------------------------------------------------------------
def trend_cycle_frames(df: pd.DataFrame, schema: Schema, window: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patient: trend = centred moving average over `window` visits, cycle = value - trend."""
    cols = [c.name for c in numeric_temporal(schema)]
    values = df[cols].astype(float)
    trend = values.groupby(df[PID], sort=False).transform(lambda s: s.rolling(window, center=True, min_periods=1).mean())
    return trend, values - trend


def within_patient_corr(values: pd.DataFrame, pid: pd.Series, *, min_visits: int = 4) -> pd.DataFrame:
    """Correlations computed within each patient, Fisher-z averaged across patients.

    Pairwise complete visits; a patient counts for a pair when it has `min_visits` such
    visits and both series vary. Vectorised with per-patient sums (no Python loop per patient).
    """
    cols = list(values.columns)
    k = len(cols)
    codes = pd.factorize(pid)[0]
    size = int(codes.max()) + 1 if len(codes) else 0
    x = values.to_numpy(float)
    m = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            ok = np.isfinite(x[:, i]) & np.isfinite(x[:, j])
            g, a, b = codes[ok], x[ok, i], x[ok, j]
            n = np.bincount(g, minlength=size).astype(float)
            sa, sb = np.bincount(g, a, size), np.bincount(g, b, size)
            saa, sbb, sab = np.bincount(g, a * a, size), np.bincount(g, b * b, size), np.bincount(g, a * b, size)
            with np.errstate(invalid="ignore", divide="ignore"):
                va, vb = saa - sa**2 / n, sbb - sb**2 / n
                cov = sab - sa * sb / n
                valid = (n >= min_visits) & (va > 1e-9 * np.maximum(saa, 1e-12)) & (vb > 1e-9 * np.maximum(sbb, 1e-12))
                r = cov[valid] / np.sqrt(va[valid] * vb[valid])
            if r.size == 0:
                m[i, j] = m[j, i] = np.nan
                continue
            z = np.arctanh(np.clip(r, -0.999, 0.999))
            m[i, j] = m[j, i] = float(np.tanh(z.mean()))
    return pd.DataFrame(m, index=cols, columns=cols)


def trend_cycle(df: pd.DataFrame, schema: Schema, window: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Health Gym trend and cycle correlation matrices of a tidy frame."""
    trend, cycle = trend_cycle_frames(df, schema, window)
    return within_patient_corr(trend, df[PID]), within_patient_corr(cycle, df[PID])


def dynamic_correlations(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, window: int = 3) -> dict[str, float]:
    """Mean |real - synthetic| over the upper triangles of the trend and cycle correlation matrices."""
    if len(numeric_temporal(schema)) < 2:
        return {}
    (rt, rc), (st, sc) = trend_cycle(real, schema, window), trend_cycle(syn, schema, window)
    return {"temporal.trend_corr_abs_diff": _upper_abs_diff(rt, st), "temporal.cycle_corr_abs_diff": _upper_abs_diff(rc, sc)}


# ---- validity (synthetic only) -------------------------------------------------------------------------
def time_order(raw: pd.DataFrame, schema: Schema) -> float:
    """Share of patients whose times strictly increase in the frame's own row order.

    Judged on the raw frame (before sorting): a generator emits each trajectory visit by
    visit, so a later row with an earlier or equal time is a broken trajectory.
    """
    ids = raw[schema.id]
    keep = ids.notna().to_numpy()
    t = pd.to_numeric(raw[schema.time], errors="coerce").astype(float)[keep]
    key = ids[keep].astype(str)
    if not len(t):
        return 1.0
    step = t.groupby(key, sort=False).diff()
    first = t.groupby(key, sort=False).cumcount() == 0
    bad = t.isna() | (~first & ~(step > 0))
    return 1.0 - float(bad.groupby(key, sort=False).any().mean())


def validity(syn: pd.DataFrame, schema: Schema, raw: pd.DataFrame | None = None) -> dict[str, float]:
    """Shares of synthetic patients / values that respect the schema's hard rules.

    ``static_consistency``: patients whose static columns are constant (missing counts as a
    value); ``time_order``: patients whose times strictly increase row after row (judged on
    `raw`, the frame as given, when passed); ``in_bounds``: numeric values inside declared
    min/max (a missing value in a non-nullable column counts as outside); ``in_categories``:
    binary/categorical values among the declared labels (missing: as for bounds).
    """
    g = syn.groupby(PID, sort=False)
    static_cols = [c.name for c in schema.static_columns]
    if static_cols and len(syn):
        static_share = float((g[static_cols].nunique(dropna=False) <= 1).all(axis=1).mean())
    else:
        static_share = 1.0
    if raw is not None:
        order = time_order(raw, schema)
    else:
        step = g[schema.time].diff()
        bad = syn[schema.time].isna() | ((syn[POS] > 0) & ~(step > 0))
        order = 1.0 - float(bad.groupby(syn[PID]).any().mean()) if len(syn) else 1.0
    num_ok = num_total = cat_ok = cat_total = 0
    for col in schema.columns:
        s = syn[col.name]
        if col.numeric:
            ok = s.notna() & np.isfinite(s.fillna(0.0))
            if col.min is not None:
                ok &= s >= col.min
            if col.max is not None:
                ok &= s <= col.max
            counted = s.notna() | (not col.nullable)
            num_ok += int((ok & counted).sum())
            num_total += int(counted.sum())
        else:
            allowed = [0.0, 1.0] if col.type == "binary" else list(col.categories or ())
            counted = s.notna() | (not col.nullable)
            cat_ok += int((s.isin(allowed) & counted).sum())
            cat_total += int(counted.sum())
    return {
        "validity.static_consistency": static_share,
        "validity.time_order": order,
        "validity.in_bounds": num_ok / num_total if num_total else 1.0,
        "validity.in_categories": cat_ok / cat_total if cat_total else 1.0,
    }
