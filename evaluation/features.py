"""Rich patient features for the detector battery: what a tidy trajectory looks like in one row.

`rich_features` extends `evaluation.data.patient_features` (lengths, gaps, statics, per-number
mean, std, first, last, slope, missing rate; per-label shares) with what a lenient summary
misses: per temporal number its min, max and 10/50/90% quantiles, the spread, mean absolute
size, largest size and direction of its visit-to-visit changes, and how often it changes at
all; per temporal category the share of visits where it switches and its longest run; the
smallest and median gap. Computed on tidy frames (`evaluation.data.tidy`) that the evaluation
has already value-protected; the features never leave the evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data.schema import Schema
from evaluation.data import PID, patient_features


def _number(v: pd.Series, pid: pd.Series, name: str) -> dict[str, pd.Series]:
    g = v.groupby(pid)
    change = v.groupby(pid).diff()  # NaN at each first visit and beside a missing value
    gc = change.groupby(pid)
    return {
        f"{name}.min": g.min(),
        f"{name}.max": g.max(),
        f"{name}.q10": g.quantile(0.1),
        f"{name}.q50": g.median(),
        f"{name}.q90": g.quantile(0.9),
        f"{name}.change_std": gc.std(),
        f"{name}.change_abs": change.abs().groupby(pid).mean(),
        f"{name}.change_max": change.abs().groupby(pid).max(),
        f"{name}.rise_share": (change > 0).astype(float).where(change.notna()).groupby(pid).mean(),
        f"{name}.same_share": (change == 0).astype(float).where(change.notna()).groupby(pid).mean(),
    }


def _category(s: pd.Series, pid: pd.Series, name: str) -> dict[str, pd.Series]:
    prev = s.groupby(pid).shift()
    known = s.notna() & prev.notna()
    switch = (s != prev).astype(float).where(known)
    run_id = (switch.fillna(1.0) > 0).groupby(pid).cumsum()  # a new run at each switch (and first visit)
    runs = s.groupby([pid, run_id]).size()
    return {
        f"{name}.switch_share": switch.groupby(pid).mean(),
        f"{name}.longest_run": runs.groupby(level=0).max().astype(float),
    }


def rich_features(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """One numeric row per patient of a tidy frame (index: patient code); missing stays NaN."""
    base = patient_features(df, schema)
    pid = df[PID]
    extra: dict[str, pd.Series] = {}
    gaps = df.groupby(PID)[schema.time].diff().groupby(pid)
    extra["gap_min"], extra["gap_median"] = gaps.min(), gaps.median()
    for col in schema.temporal_columns:
        if col.numeric:
            extra.update(_number(df[col.name].astype(float), pid, col.name))
        elif col.type == "categorical" or col.type == "binary":
            extra.update(_category(df[col.name], pid, col.name))
    more = pd.DataFrame({k: v.reindex(base.index) for k, v in extra.items()}, index=base.index)
    out = pd.concat([base, more], axis=1)
    return out.replace([np.inf, -np.inf], np.nan)
