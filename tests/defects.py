"""Real-like patients with strong structure, and planted defects a detector must catch.

`population` draws patients whose trajectories carry what a lenient detector misses: a lab
whose level follows a static column (age), persistent AR(1) deviations, a dose that rises by
the same step at every visit, a label that mostly stays put. Each function of `DEFECTS` takes
such patients and breaks one kind of structure while leaving every marginal as it was.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

SCHEMA = {
    "name": "planted",
    "id": "pid",
    "time": "day",
    "regular": False,
    "max_length": 10,
    "columns": {
        "sex": {"type": "categorical", "static": True, "categories": ["f", "m"]},
        "age": {"type": "real", "static": True, "min": 0, "max": 120},
        "lab": {"type": "real"},
        "dose": {"type": "real", "min": 0},
        "stage": {"type": "categorical", "categories": ["1", "2", "3"]},
    },
}


def population(n: int, seed: int, first_id: int = 0) -> pd.DataFrame:
    """n independent patients (seeded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        length = int(rng.integers(4, 11))
        age = float(np.round(rng.uniform(20, 80), 0))
        level, dev, day = age / 20 + rng.normal(0, 0.3), 0.0, 0
        stage = int(rng.integers(1, 4))
        for k in range(length):
            dev = 0.8 * dev + 0.6 * 0.3 * rng.normal()
            if rng.random() < 0.1:
                stage = int(np.clip(stage + rng.choice([-1, 1]), 1, 3))
            rows.append(
                {
                    "pid": first_id + p,
                    "day": day,
                    "sex": str(rng.choice(["f", "m"])),
                    "age": age,
                    "lab": float(np.round(level + dev, 3)),
                    "dose": 10.0 + 5.0 * k,
                    "stage": str(stage),
                }
            )
            day += int(rng.integers(20, 120))
    df = pd.DataFrame(rows)
    df["sex"] = df.groupby("pid")["sex"].transform("first")  # static
    return df


def shuffled_visits(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The lab's and the label's visit order shuffled within each patient (times and dose kept)."""
    out = df.copy()
    for _, idx in out.groupby("pid").groups.items():
        perm = rng.permutation(idx)
        out.loc[idx, ["lab", "stage"]] = df.loc[perm, ["lab", "stage"]].to_numpy()
    return out


def independent_labels(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The temporal label drawn afresh at every visit, at its marginal frequencies."""
    return df.assign(stage=rng.choice(df["stage"].to_numpy(), size=len(df)))


def doubled_variance(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The lab's within-patient variance doubled around each patient's mean."""
    mean = df.groupby("pid")["lab"].transform("mean")
    return df.assign(lab=mean + np.sqrt(2.0) * (df["lab"] - mean))


def wandering_step(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The dose, which rises by the same step at every visit, made to wander around that rise."""
    steps = np.where(df.groupby("pid").cumcount() == 0, 10.0, rng.normal(5.0, 2.0, len(df)))
    return df.assign(dose=np.maximum(pd.Series(steps, index=df.index).groupby(df["pid"]).cumsum(), 0.0))


def independent_statics(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The static age drawn independently of the trajectory (shuffled across patients)."""
    ages = df.groupby("pid")["age"].first()
    shuffled = pd.Series(rng.permutation(ages.to_numpy()), index=ages.index)
    return df.assign(age=df["pid"].map(shuffled))


DEFECTS: dict[str, Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]] = {
    "visit order shuffled": shuffled_visits,
    "labels independent per visit": independent_labels,
    "lab variance doubled": doubled_variance,
    "fixed step made to wander": wandering_step,
    "statics independent of trajectory": independent_statics,
}
