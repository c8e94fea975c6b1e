"""Preparing long extracts for evaluation: tidy visit tables, patient tables and patient features.

Every frame the evaluation sees (real training, real holdout, synthetic) goes through `tidy`
first, so every measure compares like with like:

- only the id, time and schema columns are kept; numbers are floats, binaries 0.0/1.0
  (`as_binary`), categoricals their canonical string labels (`as_labels`);
- rows are sorted by (patient, time) and each patient keeps at most `schema.max_length`
  visits (the model never sees longer trajectories, so the real side is cut the same way);
- patient ids are replaced by codes 0..n-1, so no real identifier travels further.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data.labels import as_binary, as_labels
from diffusion.data.schema import Column, Schema
from diffusion.errors import InputError

PID = "_pid"  # the patient code column of a tidy frame (0..n-1); the raw id is dropped
POS = "_pos"  # visit index within the patient (0, 1, 2, ...)


def tidy(df: pd.DataFrame, schema: Schema, *, what: str = "data") -> pd.DataFrame:
    """Schema columns only, typed and sorted; ids replaced by codes; trajectories cut to max_length."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"The {what} must be a pandas DataFrame, got {type(df).__name__}.")
    missing = [c for c in (schema.id, schema.time, *schema.column_names) if c not in df.columns]
    if missing:
        raise InputError(f"The {what} lacks schema column(s) {missing}; it must be in the extract's long format.")
    out = pd.DataFrame(index=df.index)
    ids = df[schema.id]
    out["_raw_id"] = ids
    out[schema.time] = pd.to_numeric(df[schema.time], errors="coerce").astype(float)
    for col in schema.columns:
        s = df[col.name]
        if col.numeric:
            out[col.name] = pd.to_numeric(s, errors="coerce").astype(float)
        elif col.type == "binary":
            out[col.name] = as_binary(s)
        else:
            out[col.name] = as_labels(s)
    out = out[ids.notna().to_numpy()]
    # sort by raw id (as text, so mixed id types still sort) then time; stable for ties
    key = out["_raw_id"].astype(str)
    out = out.assign(_key=key).sort_values(["_key", schema.time], kind="mergesort")
    out[PID] = pd.factorize(out["_key"], sort=False)[0]
    out = out.drop(columns=["_raw_id", "_key"]).reset_index(drop=True)
    out[POS] = out.groupby(PID, sort=False).cumcount()
    out = out[out[POS] < schema.max_length].reset_index(drop=True)
    return out[[PID, POS, schema.time, *schema.column_names]]


def numeric_temporal(schema: Schema) -> list[Column]:
    return [c for c in schema.temporal_columns if c.numeric]


def discrete_temporal(schema: Schema) -> list[Column]:
    return [c for c in schema.temporal_columns if not c.numeric]


def n_patients(df: pd.DataFrame) -> int:
    return int(df[PID].nunique())


def patient_static(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """One row per patient: the first value of each static column (index: patient code)."""
    cols = [c.name for c in schema.static_columns]
    return df.groupby(PID, sort=True)[cols].first() if cols else pd.DataFrame(index=np.unique(df[PID]))


def _slope(values: pd.Series, pos: pd.Series, pid: pd.Series, index: pd.Index) -> pd.Series:
    """Least-squares slope of value on visit index, per patient (NaN with < 2 observed visits)."""
    ok = values.notna()
    v, p, g = values[ok].to_numpy(float), pos[ok].to_numpy(float), pid[ok].to_numpy()
    size = int(index.max()) + 1 if len(index) else 0
    n = np.bincount(g, minlength=size).astype(float)
    sv, sp = np.bincount(g, v, size), np.bincount(g, p, size)
    spv, spp = np.bincount(g, p * v, size), np.bincount(g, p * p, size)
    den = n * spp - sp**2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(den > 1e-12, (n * spv - sp * sv) / den, np.nan)
    return pd.Series(slope, index=np.arange(size)).reindex(index)


def patient_features(df: pd.DataFrame, schema: Schema, *, exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    """One numeric row per patient, the representation the discriminator, utility and privacy use.

    Sequence length and gap statistics; static values (categoricals one-hot); per temporal
    number: mean, std, first, last, slope over visits and missing rate; per temporal category:
    share of visits in each category and the last category. Missing stays NaN.
    """
    g = df.groupby(PID, sort=True)
    index = g.size().index
    feats: dict[str, pd.Series] = {"n_visits": g.size().astype(float)}
    gaps = g[schema.time].diff()
    gg = gaps.groupby(df[PID])
    feats["gap_mean"], feats["gap_std"], feats["gap_max"] = gg.mean(), gg.std(), gg.max()
    feats["t_first"], feats["t_last"] = g[schema.time].first(), g[schema.time].last()
    for col in schema.columns:
        if col.name in exclude:
            continue
        s = df[col.name]
        if col.static:
            first = g[col.name].first()
            if col.type == "categorical":
                for cat in col.categories or ():
                    feats[f"{col.name}={cat}"] = (first == cat).astype(float).where(first.notna())
            else:
                feats[col.name] = first.astype(float)
            continue
        if col.nullable:
            feats[f"{col.name}.missing"] = s.isna().groupby(df[PID]).mean()
        if col.type == "categorical":
            cats = list(col.categories or ())
            for cat in cats:
                feats[f"{col.name}={cat}.share"] = (s == cat).astype(float).where(s.notna()).groupby(df[PID]).mean()
            feats[f"{col.name}.last"] = g[col.name].last().map({c: float(i) for i, c in enumerate(cats)}).astype(float)
            continue
        v = s.astype(float)
        gv = v.groupby(df[PID])
        feats[f"{col.name}.mean"] = gv.mean()
        feats[f"{col.name}.std"] = gv.std()
        feats[f"{col.name}.first"] = gv.first()
        feats[f"{col.name}.last"] = gv.last()
        if col.numeric:
            feats[f"{col.name}.slope"] = _slope(v, df[POS], df[PID], index)
    out = pd.DataFrame({k: v.reindex(index) for k, v in feats.items()})
    out.index.name = None
    return out


def sample_patients(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n patients of a tidy frame, drawn without replacement (seeded; all when fewer)."""
    ids = np.unique(df[PID])
    if len(ids) <= n:
        return df
    keep = np.random.default_rng(seed).choice(ids, size=n, replace=False)
    return df[df[PID].isin(keep)].reset_index(drop=True)


def align(*frames: pd.DataFrame) -> list[pd.DataFrame]:
    """The same columns (the union, first frame's order first) in every frame."""
    cols = list(frames[0].columns)
    for f in frames[1:]:
        cols += [c for c in f.columns if c not in cols]
    return [f.reindex(columns=cols) for f in frames]


def impute_scale(reference: pd.DataFrame, *others: pd.DataFrame) -> list[np.ndarray]:
    """Median-impute and standardise every frame with the reference frame's statistics."""
    cols = reference.columns
    med = reference.median()
    filled = reference.fillna(med)
    mu, sd = filled.mean(), filled.std().replace(0, 1).fillna(1)
    return [((f.reindex(columns=cols).fillna(med) - mu) / sd).fillna(0.0).to_numpy(float) for f in (reference, *others)]
