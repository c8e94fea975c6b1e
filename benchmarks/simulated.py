"""Simulated benchmark cohorts for shapes the public data sets lack (same interface as cohorts.py).

- ``sim_long``: 300 patients x 60-72 monthly visits (regular): a treatment label that switches
  now and then, a lab that moves towards a treatment-specific level after each switch, a second
  lab with AR(1) deviations missing on 20% of visits, an adverse-event flag whose odds follow the
  first lab; static age and sex.
- ``sim_vlong``: the same process, 120 patients x 250-400 visits: the long end of the shapes.
- ``sim_large``: 5,000 patients x 1-30 irregular visits (most few): six labs around a patient
  level, missing on 50-95% of visits, a stage label, static age, sex and site.

``frame(name) -> (DataFrame, schema dict)``; ``build(name, outdir) -> (csv, yaml)``. Seeded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

TREATMENT_LEVEL = {"none": 0.0, "A": -1.2, "B": 0.8}


def sim_long(
    seed: int = 0, patients: int = 300, visits: tuple[int, int] = (60, 72), name: str = "sim_long"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        age, sex = float(np.round(rng.uniform(30, 85))), str(rng.choice(["f", "m"]))
        treat, lab, dev = "none", rng.normal(0, 0.5), 0.0
        for month in range(int(rng.integers(visits[0], visits[1] + 1))):
            if rng.random() < 0.05:
                treat = str(rng.choice([t for t in TREATMENT_LEVEL if t != treat]))
            lab = 0.85 * lab + 0.15 * (TREATMENT_LEVEL[treat] + 0.01 * (age - 60)) + 0.1 * rng.normal()
            dev = 0.7 * dev + 0.3 * rng.normal()
            event = rng.random() < 1 / (1 + np.exp(-(lab - 1.5) * 2))
            rows.append(
                {
                    "pid": p,
                    "month": month,
                    "age": age,
                    "sex": sex,
                    "treatment": treat,
                    "marker": float(np.round(np.exp(1.5 + 0.5 * lab), 2)),
                    "albumin": None if rng.random() < 0.2 else float(np.round(4.0 + 0.3 * dev - 0.1 * (sex == "f"), 2)),
                    "event": int(event),
                }
            )
    schema = {
        "name": name,
        "id": "pid",
        "time": "month",
        "regular": True,
        "max_length": visits[1],
        "columns": {
            "age": {"type": "real", "static": True, "min": 0, "max": 120},
            "sex": {"type": "categorical", "static": True, "categories": ["f", "m"]},
            "treatment": {"type": "categorical", "categories": ["A", "B", "none"]},
            "marker": {"type": "real", "min": 0},
            "albumin": {"type": "real", "min": 0, "nullable": True},
            "event": {"type": "binary"},
        },
    }
    return pd.DataFrame(rows), schema


def sim_large(seed: int = 0, patients: int = 5000) -> tuple[pd.DataFrame, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.12, patients), 30)
    pid = np.repeat(np.arange(patients), lengths)
    visit = np.concatenate([np.arange(k) for k in lengths])
    gaps = rng.gamma(2.0, 30.0, len(pid)).round()
    day = pd.Series(np.where(visit == 0, rng.integers(0, 365, len(pid)), gaps + 1)).groupby(pid).cumsum().to_numpy()
    df = pd.DataFrame({"pid": pid, "day": day.astype(float)})
    age = np.round(rng.uniform(18, 95, patients))
    df["age"], df["sex"] = age[pid], rng.choice(["f", "m"], patients)[pid]
    df["site"] = rng.choice(["north", "south", "east", "west"], patients, p=[0.4, 0.3, 0.2, 0.1])[pid]
    level = rng.normal(size=(patients, 6))
    for j, missing in enumerate((0.5, 0.6, 0.7, 0.8, 0.9, 0.95)):
        values = np.exp(1.0 + 0.4 * level[pid, j] + 0.15 * rng.normal(size=len(pid)) + 0.005 * (age[pid] - 50))
        df[f"lab{j}"] = np.where(rng.random(len(pid)) < missing, np.nan, np.round(values, 2))
    stage = np.clip(np.round(level[:, 0] + 2), 1, 3).astype(int)
    df["stage"] = [str(min(3, s + (v > 10))) for s, v in zip(stage[pid], visit)]
    schema = {
        "name": "sim_large",
        "id": "pid",
        "time": "day",
        "regular": False,
        "max_length": 30,
        "columns": {
            "age": {"type": "real", "static": True, "min": 0, "max": 120},
            "sex": {"type": "categorical", "static": True, "categories": ["f", "m"]},
            "site": {"type": "categorical", "static": True, "categories": ["east", "north", "south", "west"]},
            **{f"lab{j}": {"type": "real", "min": 0, "nullable": True} for j in range(6)},
            "stage": {"type": "categorical", "categories": ["1", "2", "3"]},
        },
    }
    return df, schema


def sim_vlong(seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    return sim_long(seed, patients=120, visits=(250, 400), name="sim_vlong")


SIMULATED: dict[str, Callable[[], tuple[pd.DataFrame, dict[str, Any]]]] = {
    "sim_long": sim_long,
    "sim_large": sim_large,
    "sim_vlong": sim_vlong,
}


def frame(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    return SIMULATED[name]()


def build(name: str, outdir: str | Path) -> tuple[Path, Path]:
    """Write OUTDIR/<name>.csv and OUTDIR/<name>.yaml; return their paths."""
    df, schema = frame(name)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    csv, yml = out / f"{name}.csv", out / f"{name}.yaml"
    df.to_csv(csv, index=False)
    yml.write_text(yaml.safe_dump(schema, sort_keys=False))
    return csv, yml
