"""Fidelity: do synthetic patients have the real marginals, correlations and missing rates?

Pure functions of tidy frames (see `evaluation.data.tidy`) and the schema; no randomness.

- ``fidelity.ks_complement.<col>`` (numbers) / ``fidelity.tv_complement.<col>`` (labels), static
  columns compared patient by patient; ``fidelity.marginal_score`` (their mean);
  ``fidelity.correlation_abs_diff`` (mean |Spearman real - synthetic| over column pairs, visit level).
- ``missing.rate.{real,synthetic}.<col>``, ``missing.rate_abs_diff.<col>`` and ``.max``.

Similarity scores (complements) are 1 for identical data; differences are 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from diffusion.data.schema import Schema
from evaluation.data import patient_static


def _tv(a: pd.Series, b: pd.Series) -> float:
    pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
    idx = pa.index.union(pb.index)
    return 0.5 * float((pa.reindex(idx, fill_value=0) - pb.reindex(idx, fill_value=0)).abs().sum())


def _ks(a: pd.Series, b: pd.Series) -> float:
    return float(stats.ks_2samp(a.to_numpy(float), b.to_numpy(float)).statistic)


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
