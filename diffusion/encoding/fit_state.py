"""Fitting the encoder's state on the (protected) training patients: aggregates only.

`fit_state` reads a long extract sorted by patient and time (`frames.prepare`) and returns an `EncoderState`:
per column its dtype, missing rate, codec or label spellings, deviations (temporal numbers with
patient levels) and persistence aggregates; the time codecs; the pooled length histogram.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data import lagstats
from diffusion.data.labels import as_binary, as_labels
from diffusion.data.schema import Schema
from diffusion.encoding.frames import gaps, row_values
from diffusion.encoding.layout import GAP, pooled_counts
from diffusion.encoding.levels import DeviationCoding, Deviations
from diffusion.encoding.numeric import NumberCodec, marginal_knots
from diffusion.encoding.state import ColumnState, EncoderState, TimeState
from diffusion.encoding.switching import representatives


def scaled_rows(df: pd.DataFrame, schema: Schema, name: str, codec: NumberCodec) -> tuple[np.ndarray, np.ndarray]:
    """A temporal number (or the gap) per row, scaled, and where it is present."""
    v, ok = row_values(df, schema, name)
    if name == GAP:
        return codec.scale(np.maximum(v, 1e-12)), ok
    return codec.scale(np.where(ok, v, codec.vmin)), ok


def _column(schema: Schema, name: str, df: pd.DataFrame, first: pd.DataFrame) -> ColumnState:
    col = schema.column(name)
    series = (first if col.static else df)[name]
    entry = ColumnState(dtype=str(df[name].dtype))
    if col.nullable:
        entry.missing_rate = float(series.isna().mean()) if len(series) else None
    if col.numeric:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        entry.number = NumberCodec.fit(values, col.transform, col.type == "integer")
    elif col.type == "binary":
        entry.labels = representatives(series, as_binary(series).map(lambda v: None if pd.isna(v) else str(int(v))))
    else:
        entry.labels = representatives(series, as_labels(series))
    if not col.static and col.numeric:
        entry.lag1_rank = lagstats.lag1_long(df[name], df[schema.id], rank=True)
        entry.lag1 = lagstats.lag1_long(df[name], df[schema.id])  # Pearson: extreme visits weigh in
    elif not col.static:
        labels = as_binary(df[name]) if col.type == "binary" else as_labels(df[name])
        entry.stay = lagstats.stay_long(labels, df[schema.id])
    for key in ("lag1_rank", "lag1", "stay"):  # NaN (too few pairs) is stored as unknown
        if getattr(entry, key) is not None and not np.isfinite(getattr(entry, key)):
            setattr(entry, key, None)
    return entry


def _time(df: pd.DataFrame, schema: Schema, first: pd.DataFrame) -> TimeState:
    times = df[schema.time].to_numpy(dtype=np.float64)
    starts = first[schema.time].to_numpy(dtype=np.float64)
    integer = bool(pd.api.types.is_integer_dtype(df[schema.time]) or np.all(np.mod(times, 1) == 0))
    state = TimeState(str(df[schema.time].dtype), integer, float(starts[0]) if np.all(starts == starts[0]) else None)
    if state.t0_constant is None:
        state.t0 = NumberCodec.fit(starts, None, integer)
    if not schema.regular:
        g = gaps(df, schema)
        g = g[g > 0]
        codec = NumberCodec.fit(g if g.size else np.array([1.0]), "log", integer)
        state.gap = codec.replace(quantiles=marginal_knots(codec.scale(g)))
    return state


def fit_state(schema: Schema, df: pd.DataFrame, *, patient_levels: bool, deviations: DeviationCoding, k: int) -> EncoderState:
    """The encoder state of a prepared extract (`prepare`), discrete scale 1 (the encoder matches it)."""
    patients = df.groupby(schema.id, sort=False)
    first = patients.head(1)
    lengths = patients.size().to_numpy()
    id_series = df[schema.id]
    state = EncoderState(
        length=int(min(schema.max_length, lengths.max())),
        length_counts=pooled_counts(np.minimum(lengths, schema.max_length), k),  # sampling draws lengths from it
        columns={c.name: _column(schema, c.name, df, first) for c in schema.columns},
        time=_time(df, schema, first),
        id_integer=bool(pd.api.types.is_integer_dtype(id_series)),
        id_dtype=str(id_series.dtype),
        column_order=[c for c in df.columns if c in set(schema.column_names) | {schema.id, schema.time}],
        patient_levels=patient_levels,
        discrete_scale=1.0,
    )
    if patient_levels:
        pid = pd.factorize(id_series, sort=False)[0]
        for name in split_numbers(schema, True):
            codec = state.time.gap if name == GAP else state.columns[name].number
            z, ok = scaled_rows(df, schema, name, codec)
            dev = Deviations.fit(z, ok, pid, len(lengths), k, deviations)
            if name == GAP:
                state.time.gap_deviations = dev
            else:
                state.columns[name].deviations = dev
    return state


def split_numbers(schema: Schema, patient_levels: bool) -> list[str]:
    """The numbers split into a static patient level + a deviation: the gap (irregular schemas)
    and every temporal number, when patient levels are on."""
    if not patient_levels:
        return []
    names = [c.name for c in schema.columns if c.numeric and not c.static]
    return names if schema.regular else [GAP, *names]
