"""The frame Great Expectations sees: the patient id replaced by anonymous codes, the schema's
columns as read, and derived ``<column>::<check>`` columns (normalised numbers, canonical labels,
flags such as "constant within patient") for the checks GX has no native expectation for.
Columns the schema does not name are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from diffusion.data.dates import as_units
from diffusion.data.labels import as_binary, as_labels
from diffusion.data.schema import Schema
from expectations.suite import derived


def _numbers(series: pd.Series) -> pd.Series:
    """Values as float64; missing, text and other unreadable values become NaN (inf stays inf)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)
    out = pd.to_numeric(series, errors="coerce")
    return pd.Series(out.to_numpy(dtype=float, na_value=np.nan), index=series.index)


def _changes_within_patient(values: np.ndarray, pid: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per row (original order): True when that row's patient takes more than one value."""
    codes, _ = pd.factorize(pd.Series(values), use_na_sentinel=True)  # missing is a value of its own (-1)
    c = codes[order]
    p = pid[order]
    same = np.empty(len(c), dtype=bool)
    same[0] = False
    same[1:] = p[1:] == p[:-1]
    changed = same & np.r_[False, c[1:] != c[:-1]]
    bad_patients = np.unique(p[changed])
    bad = np.isin(pid, bad_patients) & (pid >= 0)
    return bad


def gx_frame(df: pd.DataFrame, schema: Schema, extra_columns: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The frame GX validates (see the module docstring) and aggregate facts about the extract."""
    cols: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    present = set(map(str, df.columns))
    pid = tnum = order = None
    if schema.id in present:
        codes, _ = pd.factorize(df[schema.id], use_na_sentinel=True)
        pid = codes.astype(np.int64)
        cols[schema.id] = pd.Series(np.where(codes >= 0, codes, np.nan) if (codes < 0).any() else codes, index=df.index)
        counts = np.bincount(pid[pid >= 0]) if (pid >= 0).any() else np.array([], dtype=int)
        facts["patients"] = int(len(counts))
        facts["too_long"] = int((counts > schema.max_length).sum())
    if schema.time in present:
        tnum = _time_columns(df[schema.time], schema, cols)
    if pid is not None and tnum is not None:
        order = np.lexsort((tnum.to_numpy(), pid))
        cols[derived(schema.time, "increasing")] = pd.Series(_increasing(pid, tnum.to_numpy(), order), index=df.index)
    elif pid is not None:
        order = np.argsort(pid, kind="stable")
    for c in schema.columns:
        if c.name not in present:
            continue
        raw = df[c.name]
        cols[c.name] = raw
        norm = _column_checks(c, raw, cols)
        if c.static:
            if pid is not None and order is not None and len(df):
                bad = _changes_within_patient(norm, pid, order)
            else:
                bad = np.zeros(len(df), dtype=bool)
            cols[derived(c.name, "static")] = pd.Series(~bad, index=df.index)
    for name in sorted(extra_columns):
        if name in present and name not in cols:
            cols[name] = df[name]
    return pd.DataFrame(cols), facts


def _time_columns(traw: pd.Series, schema: Schema, cols: dict[str, Any]) -> pd.Series:
    """Add the time column, whether each reads as a number (or date), and its value as a number; returns that number."""
    tc = schema.time
    cols[tc] = traw
    tnum = _numbers(traw) if schema.time_unit is None else as_units(traw, schema.time_unit)
    finite = np.isfinite(tnum.to_numpy())
    cols[derived(tc, "is_number")] = pd.Series(finite | traw.isna().to_numpy(), index=traw.index)
    tnum = tnum.where(finite, np.nan)
    cols[derived(tc, "number")] = tnum
    return tnum


def _increasing(pid: np.ndarray, t: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per row (original order): False where a patient's time does not exceed its previous one."""
    n = len(pid)
    ps, ts = pid[order], t[order]
    inc_sorted = np.ones(n, dtype=bool)
    if n > 1:
        same = (ps[1:] == ps[:-1]) & (ps[1:] >= 0)
        # NaN time / missing id rows are reported by their own expectations
        inc_sorted[1:] = ~(same & ~(ts[1:] > ts[:-1]) & ~np.isnan(ts[1:]) & ~np.isnan(ts[:-1]))
    inc = np.empty(n, dtype=bool)
    inc[order] = inc_sorted
    return inc


def _column_checks(c, raw: pd.Series, cols: dict[str, Any]) -> np.ndarray:
    """Add a column's derived checks for its type; returns its normalised values (for the static check)."""
    missing = raw.isna().to_numpy()
    if c.numeric:
        num = _numbers(raw)
        v = num.to_numpy()
        finite = np.isfinite(v)
        cols[derived(c.name, "is_number")] = pd.Series(finite | missing, index=raw.index)
        if c.type == "integer":
            whole = ~finite | (np.abs(v - np.round(v)) <= 1e-9 * np.maximum(1.0, np.abs(v)))
            cols[derived(c.name, "is_integer")] = pd.Series(whole | missing, index=raw.index)
        num = num.where(finite, np.nan)
        if c.min is not None or c.max is not None:
            cols[derived(c.name, "number")] = num
        return num.to_numpy()
    if c.type == "date":
        days = as_units(raw, "day").to_numpy()
        cols[derived(c.name, "is_date")] = pd.Series(np.isfinite(days) | missing, index=raw.index)
        return days
    if c.type == "categorical":
        lab = as_labels(raw)
        cols[derived(c.name, "label")] = lab
        return lab.to_numpy()
    b = as_binary(raw)
    cols[derived(c.name, "is_binary")] = pd.Series(b.notna().to_numpy() | missing, index=raw.index)
    return b.to_numpy()
