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


def split_validation(n: int, fraction: float, seed: int, minimum: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patient indices for training and for validation (seeded, disjoint): `fraction` of the
    patients, at least `minimum`, at most a quarter; none below 10 patients."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = min(max(int(round(n * fraction)), minimum), n // 4) if n >= 10 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])
