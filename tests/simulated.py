"""A simulated patient population for tests and benchmarks: any number of independent patients.

Each patient has static sex and age, 2-8 irregular visits, three labs that persist around a
patient level (AR(1) deviations; one log-normal, one nullable), and a temporal stage that
mostly stays put. Drawing train, holdout and "synthetic" patients from it independently gives
a generator that copies nothing; `copier` adds one that copies training patients with jitter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffusion.data.schema import Schema

SCHEMA = {
    "name": "sim",
    "id": "pid",
    "time": "day",
    "regular": False,
    "max_length": 8,
    "columns": {
        "sex": {"type": "categorical", "static": True, "categories": ["f", "m"]},
        "age": {"type": "real", "static": True, "min": 18, "max": 100},
        "alb": {"type": "real", "min": 0},
        "crp": {"type": "real", "min": 0, "nullable": True},
        "hb": {"type": "real", "min": 0},
        "stage": {"type": "categorical", "categories": ["1", "2", "3"]},
    },
}


def schema() -> Schema:
    return Schema.from_dict(SCHEMA)


def population(n: int, seed: int, first_id: int = 0) -> pd.DataFrame:
    """n independent patients in the extract's long format, ids first_id.. (seeded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        length = int(rng.integers(2, 9))
        sex, age = rng.choice(["f", "m"]), float(np.round(np.clip(rng.normal(60, 12), 18, 100), 1))
        level = rng.normal(size=3)
        dev = np.zeros(3)
        stage, day = int(rng.integers(1, 4)), 0
        for k in range(length):
            dev = 0.7 * dev + np.sqrt(1 - 0.49) * rng.normal(size=3) * 0.5
            if rng.random() < 0.15:
                stage = int(np.clip(stage + rng.choice([-1, 1]), 1, 3))
            rows.append(
                {
                    "pid": first_id + p,
                    "day": day,
                    "sex": sex,
                    "age": age,
                    "alb": float(np.round(3.5 + 0.4 * (level[0] + dev[0]), 2)),
                    "crp": None if rng.random() < 0.2 else float(np.round(np.exp(1.0 + 0.8 * (level[1] + dev[1])), 1)),
                    "hb": float(np.round(13 + 1.5 * (level[2] + dev[2]) - 0.5 * (sex == "f"), 1)),
                    "stage": str(stage),
                }
            )
            day += int(rng.integers(20, 200))
    return pd.DataFrame(rows)


def copier(train: pd.DataFrame, fresh: pd.DataFrame, share: float, jitter: float, seed: int) -> pd.DataFrame:
    """A generator that emits `share` of its patients as copies of training patients, every
    number moved by `jitter` x the column's standard deviation, the rest as `fresh` patients."""
    rng = np.random.default_rng(seed)
    n = fresh["pid"].nunique()
    k = int(round(share * n))
    copied_ids = rng.choice(train["pid"].unique(), size=k, replace=False)
    copies = train[train["pid"].isin(copied_ids)].copy()
    for col in ("alb", "crp", "hb", "age"):
        sd = train[col].std()
        noise = rng.normal(size=copies["pid"].nunique() if col == "age" else len(copies)) * jitter * sd
        if col == "age":  # a static column gets one jitter per patient
            noise = pd.Series(noise, index=copied_ids).reindex(copies["pid"]).to_numpy()
        copies[col] = copies[col] + noise
    copies["pid"] = copies["pid"] + 10_000_000
    kept = fresh[fresh["pid"].isin(fresh["pid"].unique()[k:])]
    return pd.concat([copies, kept], ignore_index=True)
