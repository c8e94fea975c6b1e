"""Long frames in and out of the encoder: checked and sorted on the way in, the extract's own
dtypes and column order restored on the way out; the gap since the previous visit."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from diffusion.data.schema import Schema
from diffusion.encoding.layout import GAP
from diffusion.encoding.state import EncoderState
from diffusion.errors import InputError

log = logging.getLogger(__name__)


def prepare(df: pd.DataFrame, schema: Schema, *, warn: bool) -> pd.DataFrame:
    """The extract sorted by patient and time (stable), after checking it has the schema's columns."""
    missing = [c for c in [schema.id, schema.time, *schema.column_names] if c not in df.columns]
    if missing:
        raise InputError(f"The extract lacks column(s) {missing} that the schema '{schema.name}' declares.")
    df = df.sort_values([schema.id, schema.time], kind="mergesort").reset_index(drop=True)
    if warn:
        too_long = int((df.groupby(schema.id, sort=False).size() > schema.max_length).sum())
        if too_long:
            log.warning(
                "%d patient(s) have more than max_length=%d visits; their later visits are cut.", too_long, schema.max_length
            )
    return df


def gaps(df: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Time since the previous visit, per row (0 at each patient's first visit)."""
    t = df[schema.time].to_numpy(dtype=np.float64)
    out = np.diff(t, prepend=t[:1] if len(t) else t)
    out[(df.groupby(schema.id, sort=False).cumcount() == 0).to_numpy()] = 0.0
    return out


def row_values(df: pd.DataFrame, schema: Schema, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A temporal number (or GAP, the gap since the previous visit) per row of a prepared
    extract, and where it is recorded (the gap: from each patient's second visit)."""
    if name == GAP:
        return gaps(df, schema), (df.groupby(schema.id, sort=False).cumcount() > 0).to_numpy()
    v = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
    return v, np.isfinite(v)


def restore_dtypes(frame: pd.DataFrame, state: EncoderState, schema: Schema) -> pd.DataFrame:
    """A decoded frame in the training extract's dtypes (integers with missing values as float or
    nullable Int, booleans with missing values as boolean) and column order."""
    dtypes = {name: e.dtype for name, e in state.columns.items()}
    dtypes[schema.time] = state.time.dtype
    dtypes[schema.id] = state.id_dtype
    for name, dtype in dtypes.items():
        s = frame[name]
        try:
            if dtype.startswith(("int", "uint", "Int")) and s.isna().any():
                frame[name] = pd.to_numeric(s).astype("float64" if dtype.startswith(("int", "uint")) else dtype)
            elif dtype == "bool" and s.isna().any():
                frame[name] = s.astype("boolean")
            elif dtype in ("object", "str", "string"):
                frame[name] = s.astype(object)
            else:
                frame[name] = s.astype(dtype)
        except (TypeError, ValueError):
            frame[name] = s
    return frame[[c for c in state.column_order if c in frame.columns]]
