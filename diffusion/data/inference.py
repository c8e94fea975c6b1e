"""A draft schema from an extract (`healthgym infer`): types, staticness, bounds and nullability
guessed from the data, for a person to read and correct before anything trains on it."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from diffusion.data.dates import parse
from diffusion.data.labels import as_labels, reads_as_boolean
from diffusion.data.schema import Column, Schema, SchemaError


def infer_schema(df: pd.DataFrame, *, id_col: str, time_col: str, name: str = "cohort", max_categories: int = 12) -> Schema:
    """A draft schema of `df` (long format); changing dates other than the time column are left out."""
    for col in (id_col, time_col):
        if col not in df.columns:
            raise SchemaError(f"Column '{col}' is not in the extract (its columns: {list(df.columns)[:30]}).")
    groups = df.groupby(id_col, sort=False)
    lengths = groups.size()
    time_dates = _as_dates(df[time_col])
    time_unit = None
    if time_dates is not None:
        time_unit = "day" if bool((time_dates == time_dates.dt.normalize()).all()) else "hour"
    columns: list[Column] = []
    left_out: list[str] = []
    for col in df.columns:
        if col in (id_col, time_col):
            continue
        column = _column(df[col], col, groups, max_categories)
        (columns if column is not None else left_out).append(column if column is not None else col)
    return Schema(
        name=_safe_name(name),
        id=id_col,
        time=time_col,
        columns=tuple(columns),
        regular=_regular(df, id_col, time_col) and time_unit is None,
        time_unit=time_unit,
        max_length=int(lengths.max()) if len(lengths) else 1,
        description=(
            f"Left out: {', '.join(left_out)} (dates that change within a patient; only the time column and static dates are modelled)."
            if left_out
            else ""
        ),
    )


def _as_dates(s: pd.Series) -> pd.Series | None:
    """The column as datetimes when nearly all its values read as dates (and not as numbers)."""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return None
    nonnull = s.dropna()
    if not len(nonnull) or pd.to_numeric(nonnull, errors="coerce").notna().mean() > 0.5:
        return None
    parsed = parse(nonnull)
    return parsed if parsed.notna().mean() >= 0.95 else None


def _regular(df: pd.DataFrame, id_col: str, time_col: str) -> bool:
    """Whether every patient's times are exactly 0, 1, ..., n-1 (a regular grid)."""
    times = pd.to_numeric(df[time_col], errors="coerce")
    if not times.notna().all():
        return False
    on_grid = df.assign(_t=times).groupby(id_col)["_t"].apply(lambda s: np.array_equal(np.sort(s.to_numpy()), np.arange(len(s))))
    return bool(on_grid.all())


def _column(s: pd.Series, col: str, groups, max_categories: int) -> Column | None:
    """The guessed column; None for a date that changes within a patient (left out)."""
    nullable = bool(s.isna().any())
    static = bool((groups[col].nunique(dropna=False) <= 1).all())
    nonnull = s.dropna()
    distinct = nonnull.unique()
    if _as_dates(s) is not None:
        return Column(col, "date", static=True, nullable=nullable) if static else None
    if pd.api.types.is_bool_dtype(s) or (len(distinct) <= 2 and reads_as_boolean(distinct)):
        return Column(col, "binary", static=static, nullable=nullable)
    if pd.api.types.is_numeric_dtype(s) and len(distinct) > max_categories:
        numeric = pd.to_numeric(nonnull)
        integral = bool(np.all(np.isclose(numeric, np.round(numeric))))
        lo = 0.0 if numeric.min() >= 0 else None
        return Column(col, "integer" if integral else "real", static=static, nullable=nullable, min=lo)
    labels = sorted(set(as_labels(pd.Series(distinct))))
    return Column(col, "categorical", static=static, nullable=nullable, categories=tuple(labels))


def _safe_name(name: str) -> str:
    """The schema name: letters, digits, `_.-`, starting with a letter, at most 64 characters."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "cohort"
    return (safe if safe[0].isalpha() else "c" + safe)[:64]
