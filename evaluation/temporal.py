"""Temporal: do synthetic patients move through time as real ones do?

Pure functions of tidy frames (see `evaluation.data.tidy`) and the schema; no randomness.

- ``temporal.lag1.{real,synthetic}.<col>`` and ``lag1_abs_diff.<col>`` (lag-1 autocorrelation
  within patients), ``.mean``/``.max`` over columns; ``lag1_rank.*`` and
  ``lag1_rank_abs_diff.<col>`` the same with Spearman's rank correlation (robust to outliers);
- ``stay_prob.{real,synthetic}.<col>``, ``stay_prob_abs_diff.<col>`` and ``transition_tvd.<col>``
  for temporal labels; ``length_tvd`` (visits per patient), ``gap_ks`` (gaps between visits);
- ``trend_corr_abs_diff`` / ``cycle_corr_abs_diff`` (Health Gym dynamic correlations).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data import lagstats
from diffusion.data.schema import Schema
from evaluation.data import PID, discrete_temporal, numeric_temporal
from evaluation.fidelity import _ks, _tv, _upper_abs_diff


def _previous(df: pd.DataFrame, column: str) -> pd.Series:
    return df.groupby(PID, sort=False)[column].shift(1)


def lag1(df: pd.DataFrame, column: str, *, rank: bool = False) -> float:
    """Lag-1 autocorrelation within patients (`diffusion.data.lagstats`: Pearson, or Spearman with
    `rank=True`, over consecutive visits where both values are recorded)."""
    return lagstats.lag1_long(df[column], df[PID], rank=rank)


def transitions(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Counts of (previous label -> next label) over consecutive visits."""
    v, prev = df[column], _previous(df, column)
    ok = v.notna() & prev.notna()
    return pd.crosstab(prev[ok].astype(str), v[ok].astype(str))


def _transition_stats(real: pd.DataFrame, syn: pd.DataFrame, column: str) -> tuple[float, float, float]:
    tr, ts = transitions(real, column), transitions(syn, column)
    stay = [lagstats.stay_long(f[column], f[PID]) for f in (real, syn)]
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


# ---- Health Gym dynamic correlations -----------------------------------------------------------------
def trend_cycle_frames(df: pd.DataFrame, schema: Schema, window: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patient: trend = centred moving average over `window` visits, cycle = value - trend."""
    cols = [c.name for c in numeric_temporal(schema)]
    values = df[cols].astype(float)
    trend = pd.DataFrame(centred_mean(values.to_numpy(), df[PID].to_numpy(), window), index=values.index, columns=cols)
    return trend, values - trend


def centred_mean(x: np.ndarray, pid: np.ndarray, window: int) -> np.ndarray:
    """Per row of [rows, k], the mean of the recorded values among the `window` visits centred on
    it within its patient (pandas' rolling(window, center=True, min_periods=1)); each patient's
    rows contiguous and in visit order, as in a tidy frame. Vectorised: one shift per offset."""
    total, count = np.zeros_like(x, dtype=float), np.zeros_like(x, dtype=float)
    n = len(x)
    for d in range(-(window // 2), (window - 1) // 2 + 1):
        src = np.arange(n) + d
        ok = (src >= 0) & (src < n)
        same = np.zeros(n, dtype=bool)
        same[ok] = pid[src[ok]] == pid[ok]
        v = np.where(same[:, None], x[np.clip(src, 0, n - 1)], np.nan)
        seen = np.isfinite(v)
        total += np.where(seen, v, 0.0)
        count += seen
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


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
