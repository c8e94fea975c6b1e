"""Repeat channels: a visit whose value equals the previous visit's, as an event of its own.

Doses, weights, settings and coarsely recorded labs often stay exactly the same from one visit
to the next; a continuous channel never repeats a value exactly, so the repeat is coded as a
discrete channel (+/- the discrete scale, like missingness) that the network generates, and
decoding carries the previous visit's decoded value forward where it is set. A temporal number
(or the gap between visits) gets one when at least `share` of its consecutive recorded pairs
repeat in the training patients (an aggregate; the encoder state keeps only the names).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data.schema import Schema
from diffusion.encoding.frames import row_values
from diffusion.encoding.layout import GAP


def same_as_previous(v: np.ndarray, ok: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(same, known) per row: known where this and the previous visit of the patient are both
    recorded, same where the value then equals the previous one."""
    prev_v, prev_ok = np.r_[np.nan, v[:-1]], np.r_[False, ok[:-1]]
    known = ok & prev_ok & ~first
    same = known & np.isclose(v, prev_v, rtol=1e-9, atol=0.0)
    return same, known


def chosen(df: pd.DataFrame, schema: Schema, share: float) -> list[str]:
    """The temporal numbers (and the gap, irregular schemas) whose values repeat at least `share` of the time."""
    if share <= 0:
        return []
    first = (df.groupby(schema.id, sort=False).cumcount() == 0).to_numpy()
    names = ([] if schema.regular else [GAP]) + [c.name for c in schema.columns if c.numeric and not c.static]
    out = []
    for name in names:
        same, known = same_as_previous(*row_values(df, schema, name), first)
        if known.any() and same[known].mean() >= share:
            out.append(name)
    return out


def carry_forward(values: np.ndarray, same: np.ndarray, recorded: np.ndarray) -> np.ndarray:
    """[n, L] values with each visit flagged `same` (and recorded, after a recorded visit)
    taking the previous visit's value, in visit order so runs of repeats hold one value."""
    out = np.array(values, dtype=np.float64, copy=True)
    for t in range(1, out.shape[1]):
        take = same[:, t] & recorded[:, t] & recorded[:, t - 1]
        out[take, t] = out[take, t - 1]
    return out
