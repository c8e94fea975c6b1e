"""Patient-level helpers on long extracts (plain pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_patients(df: pd.DataFrame, id_col: str, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): whole patients, `fraction` of them held out, seeded and order-free."""
    ids = np.sort(df[id_col].unique())
    rng = np.random.default_rng(seed)
    n_hold = int(round(len(ids) * fraction))
    held = set(rng.permutation(ids)[:n_hold].tolist())
    is_held = df[id_col].isin(held)
    return df[~is_held].reset_index(drop=True), df[is_held].reset_index(drop=True)
