"""How values persist from visit to visit: the one home of lag-1 correlations and stay rates.

Both statistics read *pairs of consecutive visits where both values are recorded*: the lag-1
correlation of a number is the correlation over those pairs (Pearson, or Spearman's rank with
``rank=True``), the stay rate of a label the share of those pairs with the same label. The
encoder keeps them as fit-time aggregates, decoding calibration aims at them and the evaluation
reports them; each reads them here, from a long frame (`pairs_long`) or from a
[patients, visits] array (`pairs_grid`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

MIN_PAIRS = 3  # fewer pairs, or a constant side, have no correlation to speak of


def pairs_long(values: pd.Series, patient: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value at a visit, value at the visit before) over consecutive rows of one patient, both
    present; rows must be in visit order within each patient."""
    previous = values.groupby(np.asarray(patient), sort=False).shift(1)
    ok = (values.notna() & previous.notna()).to_numpy()
    return values.to_numpy()[ok], previous.to_numpy()[ok]


def pairs_grid(values: np.ndarray, recorded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same pairs from values [n, L] and recorded [n, L] (visits in columns)."""
    pair = recorded[:, 1:] & recorded[:, :-1]
    return values[:, 1:][pair], values[:, :-1][pair]


def correlation(now: np.ndarray, before: np.ndarray, *, rank: bool = False) -> float:
    """Lag-1 correlation of value pairs; NaN with fewer than MIN_PAIRS pairs or a constant side."""
    now, before = np.asarray(now, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if now.size < MIN_PAIRS or np.ptp(now) <= 0 or np.ptp(before) <= 0:
        return float("nan")
    if rank:
        return float(stats.spearmanr(now, before).statistic)
    return float(np.corrcoef(now, before)[0, 1])


def stay_rate(now: np.ndarray, before: np.ndarray) -> float:
    """Share of label pairs with the same label; NaN without pairs."""
    return float(np.mean(now == before)) if len(now) else float("nan")


def lag1_long(values: pd.Series, patient: pd.Series | np.ndarray, *, rank: bool = False) -> float:
    """Lag-1 correlation of a number in a long frame (see `pairs_long`)."""
    return correlation(*pairs_long(pd.to_numeric(values, errors="coerce"), patient), rank=rank)


def lag1_grid(values: np.ndarray, recorded: np.ndarray, *, rank: bool = False) -> float:
    """Lag-1 correlation of a number from [n, L] arrays (see `pairs_grid`)."""
    return correlation(*pairs_grid(values, recorded), rank=rank)


def stay_long(labels: pd.Series, patient: pd.Series | np.ndarray) -> float:
    """Stay rate of a label column in a long frame (see `pairs_long`)."""
    return stay_rate(*pairs_long(labels, patient))


def stay_grid(codes: np.ndarray, recorded: np.ndarray) -> float:
    """Stay rate of label codes [n, L] at recorded [n, L] visits."""
    return stay_rate(*pairs_grid(codes, recorded))
