"""A long extract -> OMOP tables in a database: how the bundled PBC cohort becomes an OMOP
database for the demo and the tests (`healthgym omop load`).

Each patient's first visit falls on a date drawn (seeded) from `spread_days` days after
`anchor`, later visits keep their day offsets; person_id is the extract's id. It is a source
database, as a hospital's would be: the extract's real ids and values, dates invented here.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from expectations.omop.convert import to_omop
from expectations.omop.mapping import Mapping
from expectations.omop.tables import write_tables


def first_visits(ids: pd.Series, anchor: date, spread_days: int, seed: int = 0) -> pd.Series:
    """One first-visit date per patient id: `anchor` plus a seeded draw of up to `spread_days` days."""
    unique = np.sort(ids.unique())
    offsets = np.random.default_rng(seed).integers(0, max(int(spread_days), 0) + 1, size=len(unique))
    return pd.Series(pd.Timestamp(anchor) + pd.to_timedelta(offsets, unit="D"), index=unique)


def load_extract(
    df: pd.DataFrame, mapping: Mapping, url: str, schema: str | None, anchor: date = date(1974, 1, 1), spread_days: int = 3650
) -> dict[str, int]:
    """Write `df` as OMOP tables (one transaction); rows per table."""
    frames = to_omop(df, mapping, first_visits(df[mapping.id], anchor, spread_days))
    return write_tables(url, schema, frames)
