"""A long frame (one row per patient per visit, as the extract or a release) -> OMOP CDM frames.

`to_omop(df, mapping, anchor)`: one person per patient (person_id = the frame's id, which must
be an integer: a release's synthetic ids are, never a real person_id), one visit_occurrence per
row, one measurement/observation per mapped non-missing value (numbers as value_as_number,
labels back to their value_as_concept_id), a static column once per person at the first visit,
a condition flag of 1 as one condition_occurrence, and an observation_period from the first
visit to the last. Dates are the `anchor` date plus the time column in days (a time column of
dates is used as it is); a birth date is the first visit minus the age. Event ids are the row
numbers times `id_sign` (-1 for a release: negative, so none equals a source database's id).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from expectations.omop.mapping import Mapped, Mapping, MappingError
from expectations.omop.tables import TYPE_CONCEPT


def _dates(df: pd.DataFrame, mapping: Mapping, anchor: date | pd.Series) -> pd.Series:
    """Each row's date: anchor (a date, or one per id) + time days; a time column of dates as it is."""
    t = df[mapping.time]
    if pd.api.types.is_datetime64_any_dtype(t):
        return t.dt.normalize()
    start = df[mapping.id].map(anchor) if isinstance(anchor, pd.Series) else pd.Timestamp(anchor)
    return pd.to_datetime(start) + pd.to_timedelta(np.floor(pd.to_numeric(t).astype(float)), unit="D")


def _label_concepts(values: pd.Series, labels: dict[int, str], what: str) -> pd.Series:
    """Labels back to their concept ids; a label the mapping does not name is a MappingError."""
    back = {label: concept for concept, label in labels.items()}
    text = values.map(lambda v: str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v))
    unknown = sorted(set(text) - set(back))
    if unknown:
        raise MappingError(f"{what} holds {len(unknown)} label(s) that its labels in the mapping do not name; add them.")
    return text.map(back).astype("int64")


def _persons(df: pd.DataFrame, mapping: Mapping, dates: pd.Series) -> pd.DataFrame:
    first = df.assign(_date=dates).sort_values([mapping.id, "_date"]).groupby(mapping.id, sort=True).first()
    out = pd.DataFrame({"person_id": first.index.astype("int64")})
    birth = first["_date"].reset_index(drop=True)
    genders = pd.Series(0, index=out.index)
    for name, spec in mapping.person.items():
        if spec["field"] == "age":
            birth = birth - pd.to_timedelta(first[name].astype(float).fillna(0).to_numpy() * 365.25, unit="D")
        else:
            vals = first[name].reset_index(drop=True)
            genders = _label_concepts(vals.dropna(), spec["labels"], f"person.{name}").reindex(out.index).fillna(0)
    out["gender_concept_id"] = genders.astype("int64")
    out["year_of_birth"] = birth.dt.year.astype("int64")
    out["month_of_birth"] = birth.dt.month.astype("int64")
    out["day_of_birth"] = birth.dt.day.astype("int64")
    out["birth_datetime"] = birth.dt.floor("D")
    out["race_concept_id"] = 0
    out["ethnicity_concept_id"] = 0
    out["person_source_value"] = None
    out["gender_source_value"] = None
    return out


def _events(df: pd.DataFrame, col: Mapped, visits: pd.DataFrame, mapping: Mapping) -> pd.DataFrame:
    """The measurement or observation rows of one mapped column."""
    rows = visits.assign(value=df[col.name].to_numpy())
    if col.static:  # once per person, at the first visit
        rows = rows.sort_values(["person_id", "date"]).groupby("person_id", sort=False).head(1)
    rows = rows[rows["value"].notna()]
    out = pd.DataFrame(
        {
            "person_id": rows["person_id"].to_numpy(),
            f"{col.table}_concept_id": col.concept_id,
            f"{col.table}_date": rows["date"].dt.date.to_numpy(),
            f"{col.table}_type_concept_id": TYPE_CONCEPT,
            "value_as_number": np.nan if col.labels else pd.to_numeric(rows["value"]).astype(float).to_numpy(),
            "value_as_concept_id": pd.array(
                _label_concepts(rows["value"], col.labels, f"Column {col.name}") if col.labels else [pd.NA] * len(rows),
                dtype="Int64",
            ),
            "unit_concept_id": pd.array([pd.NA] * len(rows), dtype="Int64"),
            "unit_source_value": pd.array([col.unit] * len(rows), dtype=object),
            "visit_occurrence_id": rows["visit_occurrence_id"].to_numpy(),
        }
    )
    return out


def to_omop(df: pd.DataFrame, mapping: Mapping, anchor: date | pd.Series, id_sign: int = 1) -> dict[str, pd.DataFrame]:
    """The OMOP frames of `df` (see the module's docstring), keyed by table name."""
    missing = [c for c in [mapping.id, mapping.time, *mapping.names] if c not in df.columns]
    if missing:
        raise MappingError(f"The data lacks column(s) {missing} that the OMOP mapping names.")
    if not pd.api.types.is_integer_dtype(df[mapping.id]):
        raise MappingError(
            f"OMOP person ids are integers: the id column {mapping.id} is not (release from an integer-id extract)."
        )
    df = df.reset_index(drop=True)
    dates = _dates(df, mapping, anchor)
    n = len(df)
    visits = pd.DataFrame(
        {
            "visit_occurrence_id": id_sign * np.arange(1, n + 1, dtype="int64"),
            "person_id": df[mapping.id].astype("int64"),
            "date": dates,
        }
    )
    frames = {"person": _persons(df, mapping, dates)}
    span = visits.groupby("person_id")["date"].agg(["min", "max"]).reset_index()
    frames["observation_period"] = pd.DataFrame(
        {
            "observation_period_id": id_sign * np.arange(1, len(span) + 1, dtype="int64"),
            "person_id": span["person_id"],
            "observation_period_start_date": span["min"].dt.date,
            "observation_period_end_date": span["max"].dt.date,
            "period_type_concept_id": TYPE_CONCEPT,
        }
    )
    frames["visit_occurrence"] = pd.DataFrame(
        {
            "visit_occurrence_id": visits["visit_occurrence_id"],
            "person_id": visits["person_id"],
            "visit_concept_id": mapping.visit_concept_id,
            "visit_start_date": dates.dt.date,
            "visit_end_date": dates.dt.date,
            "visit_type_concept_id": TYPE_CONCEPT,
        }
    )
    for table in ("measurement", "observation"):
        parts = [_events(df, c, visits, mapping) for c in mapping.columns if c.table == table]
        events = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if len(events):
            events.insert(0, f"{table}_id", id_sign * np.arange(1, len(events) + 1, dtype="int64"))
            frames[table] = events
    frames["condition_occurrence"] = _conditions(df, mapping, visits, id_sign)
    return frames


def _conditions(df: pd.DataFrame, mapping: Mapping, visits: pd.DataFrame, id_sign: int) -> pd.DataFrame:
    """A flag of 1 (per person, at the first visit) as one condition_occurrence of its first concept."""
    first = visits.sort_values(["person_id", "date"]).groupby("person_id", sort=True).head(1).set_index("person_id")
    parts = []
    for name, concepts in mapping.conditions.items():
        flags = df.groupby(mapping.id)[name].first()
        ids = flags[pd.to_numeric(flags, errors="coerce").fillna(0) > 0].index.astype("int64")
        parts.append(
            pd.DataFrame(
                {
                    "person_id": ids,
                    "condition_concept_id": concepts[0],
                    "condition_start_date": first.loc[ids, "date"].dt.date.to_numpy(),
                    "condition_type_concept_id": TYPE_CONCEPT,
                    "visit_occurrence_id": first.loc[ids, "visit_occurrence_id"].to_numpy(),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["person_id"])
    out.insert(0, "condition_occurrence_id", id_sign * np.arange(1, len(out) + 1, dtype="int64"))
    return out
