"""Seeded generators of cohort shapes and hostile extracts, for property tests and fuzzing.

`cohort(seed)` draws one extract that fits the schema format (../shared/CONTRACT.md section 2)
in a shape drawn from the space the pipeline must survive: 2 to 2,000 patients, 1 to 500
visits, most patients with one visit, regular or irregular times, dates, all-missing nullable
columns, constant columns, one- and many-label categoricals, huge and negative ranges, a label
held by a single patient. The same seed gives the same cohort.

`hostile(seed)` takes a valid cohort and breaks it in one drawn way that validation must
refuse (`HOSTILE` names the ways); `benign(seed)` perturbs one harmlessly (rows shuffled,
extra columns) so validation must accept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Drawn:
    """A drawn cohort: the extract, its schema (as a dict) and what shape it has (for messages)."""

    df: pd.DataFrame
    schema: dict[str, Any]
    shape: dict[str, Any] = field(default_factory=dict)


def _lengths(rng: np.random.Generator, n: int, longest: int, how: str) -> np.ndarray:
    if how == "single":  # most patients seen once, a few up to `longest`
        out = np.ones(n, int)
        few = rng.random(n) < 0.15
        out[few] = rng.integers(1, longest + 1, few.sum())
        return out
    if how == "fixed":
        return np.full(n, longest)
    return rng.integers(1, longest + 1, n)


def _times(rng: np.random.Generator, length: int, regular: bool) -> np.ndarray:
    if regular:
        return np.arange(length, dtype=float)
    return np.cumsum(np.r_[rng.integers(0, 30), rng.integers(1, 90, length - 1)]).astype(float)


def _numeric_column(rng: np.random.Generator, kind: str, rows: int, patient: np.ndarray, visit: np.ndarray) -> np.ndarray:
    """Values of one temporal number in a drawn style (a patient level, a trend, noise)."""
    level = rng.normal(size=patient.max() + 1)[patient]
    base = level + 0.3 * rng.normal(size=rows)
    if kind == "huge":
        return np.round(1e9 * np.exp(base), 0)
    if kind == "negative":
        return np.round(-500 + 200 * base, 3)
    if kind == "constant":
        return np.full(rows, 7.5)
    if kind == "trend":  # rises by the same step at every visit
        return 10.0 + 2.0 * visit
    return np.round(50 + 10 * base, 2)


def cohort(seed: int, *, max_patients: int = 2000, max_visits: int = 500) -> Drawn:
    """One cohort of a drawn shape (seeded)."""
    rng = np.random.default_rng(seed)
    n = int(np.clip(np.round(np.exp(rng.uniform(np.log(2), np.log(max_patients)))), 2, max_patients))
    longest = int(rng.choice([1, 2, 5, 8, 20, 60, max_visits]))
    longest = min(longest, max(1, 20_000 // n))  # keep a drawn case small enough to train in seconds
    how = str(rng.choice(["single", "uniform", "fixed"]))
    regular = bool(rng.random() < 0.4)
    dates = not regular and rng.random() < 0.3
    lengths = _lengths(rng, n, longest, how)
    patient = np.repeat(np.arange(n), lengths)
    visit = np.concatenate([np.arange(k) for k in lengths])
    rows = len(patient)
    times = np.concatenate([_times(rng, k, regular) for k in lengths])
    ids = 1000 + np.arange(n) * 7
    df = pd.DataFrame({"pid": ids[patient]})
    if dates:
        df["when"] = (pd.Timestamp("2015-01-01") + pd.to_timedelta(times, unit="D")).strftime("%Y-%m-%d")
        time_key: Any = {"column": "when", "unit": "day"}
    else:
        df["t"] = times
        time_key = "t"
    columns: dict[str, Any] = {}

    # static columns: a number, a category with one or many labels, a binary, a label of one patient
    df["age"] = np.round(rng.uniform(18, 90, n), 0)[patient]
    columns["age"] = {"type": "real", "static": True, "min": 0, "max": 120}
    labels = ["a"] if rng.random() < 0.3 else ["a", "b", "c", "d"][: int(rng.integers(2, 5))]
    group = rng.choice(labels, n).astype(object)  # object: a longer label fits
    if n > 3 and len(labels) > 1 and rng.random() < 0.5:
        group[0] = "lone"  # a label held by a single patient
        labels = [*labels, "lone"]
    df["group"] = group[patient]
    columns["group"] = {"type": "categorical", "static": True, "categories": labels}
    df["flag"] = rng.integers(0, 2, n)[patient]
    columns["flag"] = {"type": "binary", "static": True}

    # temporal numbers in drawn styles; nullable ones sometimes wholly missing
    kinds = rng.choice(["plain", "huge", "negative", "constant", "trend"], size=int(rng.integers(1, 4)), replace=False)
    for i, kind in enumerate(kinds):
        name = f"lab{i}"
        values = _numeric_column(rng, str(kind), rows, patient, visit)
        col: dict[str, Any] = {"type": "real"}
        missing = float(rng.choice([0.0, 0.0, 0.3, 0.3, 0.95, 1.0]))
        if missing > 0:
            col["nullable"] = True
            values = np.where(rng.random(rows) < missing, np.nan, values)
        df[name] = values
        columns[name] = col
    # a temporal category with one or several labels, sometimes a count
    stages = ["x"] if rng.random() < 0.3 else ["1", "2", "3"]
    df["stage"] = rng.choice(stages, rows)
    columns["stage"] = {"type": "categorical", "categories": stages}
    if rng.random() < 0.5:
        df["count"] = rng.poisson(3, rows)
        columns["count"] = {"type": "integer", "min": 0}

    order = rng.permutation(rows)  # rows may come in any order
    df = df.iloc[order].reset_index(drop=True)
    schema = {
        "name": f"gen{seed}",
        "id": "pid",
        "time": time_key,
        "regular": regular,
        "max_length": int(max(lengths.max(), 1)),
        "columns": columns,
    }
    if n < 10:
        schema["min_patients"] = 2  # validation's default floor is 10; a tiny cohort is declared so
    shape = {
        "patients": n,
        "longest": int(lengths.max()),
        "lengths": how,
        "regular": regular,
        "dates": dates,
        "labs": [str(k) for k in kinds],
        "missing": {k: float(df[k].isna().mean()) for k in columns if k.startswith("lab")},
    }
    return Drawn(df, schema, shape)


# ---- hostile and benign extracts -------------------------------------------------------------
def _break(rng: np.random.Generator, df: pd.DataFrame, schema: dict[str, Any], how: str) -> pd.DataFrame:
    df = df.copy()
    time_col = schema["time"]["column"] if isinstance(schema["time"], dict) else schema["time"]
    i = int(rng.integers(len(df)))
    if how == "missing_id":
        df.loc[i, "pid"] = np.nan
    elif how == "drop_column":
        df = df.drop(columns=[str(rng.choice([c for c in schema["columns"]]))])
    elif how == "duplicate_visit":
        df = pd.concat([df, df.iloc[[i]]], ignore_index=True)
    elif how == "out_of_bounds":
        df.loc[df["pid"] == df.loc[i, "pid"], "age"] = 500.0
    elif how == "unknown_label":
        df.loc[i, "stage"] = "unheard-of"
    elif how == "static_changes":
        rows = df.index[df["pid"] == df.loc[i, "pid"]]
        df.loc[rows, "age"] = df.loc[rows, "age"].to_numpy() + np.arange(len(rows))
        if len(rows) < 2:  # a one-visit patient cannot change: give it a second, different visit
            extra = df.loc[rows].copy()
            extra[time_col] = _later(extra[time_col])
            extra["age"] = extra["age"] + 1
            df = pd.concat([df, extra], ignore_index=True)
    elif how == "text_in_number":
        df["lab0"] = df["lab0"].astype(object)
        df.loc[i, "lab0"] = "high"
    elif how == "null_in_required":
        df.loc[i, "stage"] = None
    elif how == "bad_binary":
        df.loc[df["pid"] == df.loc[i, "pid"], "flag"] = 7
    elif how == "empty":
        df = df.iloc[:0]
    return df


def _later(times: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(times):
        return times + 1000
    return (pd.to_datetime(times) + pd.Timedelta(days=3000)).dt.strftime("%Y-%m-%d")


HOSTILE = (
    "missing_id",
    "drop_column",
    "duplicate_visit",
    "out_of_bounds",
    "unknown_label",
    "static_changes",
    "text_in_number",
    "null_in_required",
    "bad_binary",
    "empty",
)


def hostile(seed: int) -> tuple[Drawn, str]:
    """A valid small cohort broken in one drawn way (one of `HOSTILE`) that validation must refuse."""
    rng = np.random.default_rng(10_000 + seed)
    drawn = cohort(seed, max_patients=300, max_visits=20)
    how = str(rng.choice(HOSTILE))
    return Drawn(_break(rng, drawn.df, drawn.schema, how), drawn.schema, drawn.shape), how


def benign(seed: int) -> Drawn:
    """A valid small cohort, rows shuffled again and an unnamed column added: validation must accept it."""
    rng = np.random.default_rng(20_000 + seed)
    drawn = cohort(seed, max_patients=300, max_visits=20)
    df = drawn.df.sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    df["note"] = "unnamed"
    return Drawn(df, drawn.schema, drawn.shape)
