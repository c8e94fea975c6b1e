"""Validity: do synthetic patients obey the schema's hard rules (static values, time order, bounds)?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data.schema import Schema
from evaluation.data import PID, POS


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
