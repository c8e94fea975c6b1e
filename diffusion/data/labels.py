"""The one rule for reading category labels and booleans, shared by the schema, validation,
training, decoding and evaluation.

A label is the canonical string of a value: 1, 1.0 and "1" are "1"; a value that reads as a
boolean (True, "True", "true", "FALSE", quoted in YAML or not) is "true" / "false"; other text is
stripped of surrounding spaces. A binary value is 1.0 for the true spellings (`TRUE_LABELS`),
0.0 for the false ones, NaN when missing or unreadable. Both readers compute each distinct value
once, so a column of 10^6 rows costs one pass of `pd.factorize`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

TRUE_LABELS = frozenset({"1", "1.0", "true", "t", "yes", "y"})
FALSE_LABELS = frozenset({"0", "0.0", "false", "f", "no", "n"})
BOOLEAN_WORDS = {"true": "true", "false": "false"}  # spelled-out booleans: one label whatever the case


def canonical_label(value: Any) -> str:
    """The string form of a category value (see the module docstring)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    text = str(value).strip()
    return BOOLEAN_WORDS.get(text.lower(), text)


def _per_distinct(series: pd.Series, read: Any, missing: Any, dtype: Any) -> np.ndarray:
    """`read` applied once per distinct present value; `missing` where the value is missing."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    table = np.array([read(u) for u in uniques] + [missing], dtype=dtype)
    return table[codes]  # code -1 (missing) takes the last entry


def as_labels(series: pd.Series) -> pd.Series:
    """Categorical values as canonical labels; missing stays missing (None, object dtype)."""
    return pd.Series(_per_distinct(series, canonical_label, None, object), index=series.index, dtype=object)


def _binary_value(value: Any) -> float:
    label = canonical_label(value).lower()
    if label in TRUE_LABELS:
        return 1.0
    return 0.0 if label in FALSE_LABELS else float("nan")


def as_binary(series: pd.Series) -> pd.Series:
    """Binary values as floats 0.0 / 1.0 (NaN for missing or unreadable values)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        values = pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)
        return values.where(values.isin([0.0, 1.0]), np.nan)
    return pd.Series(_per_distinct(series, _binary_value, np.nan, float), index=series.index)


def reads_as_boolean(values: Any) -> bool:
    """Whether every value reads as a boolean spelling (used by `schema infer`)."""
    return all(canonical_label(v).lower() in TRUE_LABELS | FALSE_LABELS for v in values)
