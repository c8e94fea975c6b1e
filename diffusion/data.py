"""Patient-level helpers on long extracts (plain pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def holdout_size(n: int, fraction: float, minimum: int = 0) -> int:
    """Patients to hold out of n: `fraction` of them, at least `minimum` but at most 40%."""
    return max(int(round(n * fraction)), min(minimum, int(0.4 * n)))


def split_patients(
    df: pd.DataFrame, id_col: str, fraction: float, seed: int, minimum: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): whole patients held out (`holdout_size`), seeded and order-free."""
    ids = np.sort(df[id_col].unique())
    rng = np.random.default_rng(seed)
    n_hold = holdout_size(len(ids), fraction, minimum)
    held = set(rng.permutation(ids)[:n_hold].tolist())
    is_held = df[id_col].isin(held)
    return df[~is_held].reset_index(drop=True), df[is_held].reset_index(drop=True)
