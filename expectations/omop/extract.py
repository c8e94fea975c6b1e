"""OMOP CDM tables -> the long extract (one row per person per visit, or per day) and a report.

`omop_extract(url, cdm_schema, mapping)` reads person, visit_occurrence (group_by visit),
measurement, observation and condition_occurrence (only when conditions are mapped), and
returns (extract, report). Rows: one per visit_occurrence of a person (group_by visit; events
without a visit_occurrence_id form a row per date), or one per date with events (group_by day).
Time: days since the person's first row. Age: years from the birth (birth_datetime, else
year/month/day_of_birth, a missing month or day taken mid-year or mid-month) to the first row.

The report counts, never guesses: the rows of each concept the mapping does not name (per
table), the units seen per mapped column (unit_source_value, else unit_concept_id), with a
warning for a column of more than one unit; the events outside any visit. A mapped concept with
no rows, or a value_as_concept_id / gender_concept_id its labels do not name, is a `MappingError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from expectations.omop.mapping import TABLES, Mapping, MappingError
from expectations.sql import SourceError, db_problem, engine, missing_file, redact


def _read(conn, sql: str) -> pd.DataFrame:
    from sqlalchemy import text

    chunks = list(pd.read_sql(text(sql), conn, chunksize=100_000))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


def _name(conn, schema: str | None, table: str) -> str:
    quote = conn.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def omop_extract(url: str, cdm_schema: str | None, mapping: Mapping) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the long extract, the report) from the OMOP tables at `url` (in `cdm_schema`)."""
    from sqlalchemy.exc import SQLAlchemyError

    missing_file(url, "The OMOP database")
    eng = engine(url, "The OMOP database")
    where = redact(url) + (f" schema {cdm_schema}" if cdm_schema else "")
    try:
        with eng.connect().execution_options(stream_results=True) as conn:  # server-side cursors: chunks, not the whole table
            persons = _read(conn, f"SELECT * FROM {_name(conn, cdm_schema, 'person')}")
            report: dict[str, Any] = {"source": where, "unmapped_concepts": {}, "units": {}, "warnings": []}
            events = pd.concat([_table_events(conn, cdm_schema, t, mapping, report) for t in TABLES], ignore_index=True)
            visits = None
            if mapping.group_by == "visit":
                sql = (
                    f"SELECT visit_occurrence_id, person_id, visit_start_date FROM {_name(conn, cdm_schema, 'visit_occurrence')}"
                )
                visits = _read(conn, sql)
            conditions = _conditions(conn, cdm_schema, mapping, report) if mapping.conditions else None
    except SQLAlchemyError as exc:
        raise SourceError(f"Reading the OMOP tables at {where} failed ({db_problem(exc)}).") from None
    finally:
        eng.dispose()
    df = _long(events, visits, mapping, report)
    df = _statics(df, events, persons, conditions, mapping)
    if df.empty:
        raise MappingError(f"The OMOP tables at {where} hold no rows of the mapped concepts for any person.")
    report.update({"rows": int(len(df)), "patients": int(df[mapping.id].nunique())})
    return df[[mapping.id, mapping.time, *mapping.names]], report


def _table_events(conn, schema: str | None, table: str, mapping: Mapping, report: dict) -> pd.DataFrame:
    """The mapped rows of `table` (person, visit, date, column, value, unit), after counting the rest."""
    mapped = mapping.concepts(table)
    if not mapped:
        return pd.DataFrame(columns=["person_id", "visit_occurrence_id", "date", "column", "value", "unit"])
    concept = TABLES[table]
    counts = _read(conn, f"SELECT {concept} AS concept, COUNT(*) AS n FROM {_name(conn, schema, table)} GROUP BY {concept}")
    counts = dict(zip(counts["concept"].astype("int64"), counts["n"].astype("int64")))
    absent = sorted(c for c in mapped if c not in counts)
    if absent:
        names = [mapped[c].name for c in absent]
        raise MappingError(f"The {table} table has no rows of concept(s) {absent} (mapped to {names}): check the concept ids.")
    report["unmapped_concepts"][table] = {int(c): int(n) for c, n in sorted(counts.items()) if c not in mapped}
    ids = ", ".join(str(c) for c in mapped)
    rows = _read(
        conn,
        f"SELECT person_id, visit_occurrence_id, {table}_date AS date, {concept} AS concept, value_as_number, "
        f"value_as_concept_id, unit_source_value, unit_concept_id FROM {_name(conn, schema, table)} WHERE {concept} IN ({ids})",
    )
    out = pd.DataFrame(
        {
            "person_id": rows["person_id"].astype("int64"),
            "visit_occurrence_id": rows["visit_occurrence_id"],
            "date": pd.to_datetime(rows["date"]),
            "column": rows["concept"].astype("int64").map({c: m.name for c, m in mapped.items()}),
            "value": _values(rows, mapped),
            "unit": rows["unit_source_value"].where(rows["unit_source_value"].notna(), rows["unit_concept_id"]),
        }
    )
    for column, units in out.groupby("column")["unit"]:
        seen = {str(u): int(n) for u, n in units.dropna().value_counts().items()}
        report["units"][column] = seen
        if len(seen) > 1:
            report["warnings"].append(f"column {column} has {len(seen)} units {sorted(seen)}: its values are not converted")
    return out


def _values(rows: pd.DataFrame, mapped: dict) -> pd.Series:
    """value_as_number, or value_as_concept_id through the column's labels (an unnamed concept: MappingError)."""
    out = pd.Series(np.nan, index=rows.index, dtype=object)
    for concept, col in mapped.items():
        mine = rows["concept"].astype("int64") == concept
        if not col.labels:
            out[mine] = pd.to_numeric(rows.loc[mine, "value_as_number"], errors="coerce").astype(float)
            continue
        values = rows.loc[mine, "value_as_concept_id"].dropna().astype("int64")
        unknown = sorted(set(values) - set(col.labels))
        if unknown:
            n = int(values.isin(unknown).sum())
            raise MappingError(
                f"Column {col.name}: {n} row(s) of concept {concept} have value_as_concept_id {unknown[:20]}, which its labels "
                "do not name; add them to labels in the mapping."
            )
        out[values.index] = values.map(col.labels)
    return out


def _conditions(conn, schema: str | None, mapping: Mapping, report: dict) -> pd.DataFrame:
    """(person_id, flag column) pairs of the mapped conditions, after counting the unmapped ones."""
    table = _name(conn, schema, "condition_occurrence")
    counts = _read(conn, f"SELECT condition_concept_id AS concept, COUNT(*) AS n FROM {table} GROUP BY condition_concept_id")
    ids = {c: name for name, concepts in mapping.conditions.items() for c in concepts}
    report["unmapped_concepts"]["condition_occurrence"] = {
        int(c): int(n) for c, n in zip(counts["concept"], counts["n"]) if int(c) not in ids
    }
    rows = _read(
        conn, f"SELECT person_id, condition_concept_id FROM {table} WHERE condition_concept_id IN ({', '.join(map(str, ids))})"
    )
    return pd.DataFrame({"person_id": rows["person_id"].astype("int64"), "column": rows["condition_concept_id"].map(ids)})


def _long(events: pd.DataFrame, visits: pd.DataFrame | None, mapping: Mapping, report: dict) -> pd.DataFrame:
    """One row per (person, visit or date) with the time-varying columns aggregated."""
    static = {c.name for c in mapping.columns if c.static}
    ev = events[~events["column"].isin(static)].copy()
    if visits is not None:
        visit_ids = pd.to_numeric(visits["visit_occurrence_id"]).astype("int64")
        starts = dict(zip(visit_ids, pd.to_datetime(visits["visit_start_date"])))
        ids = pd.to_numeric(ev["visit_occurrence_id"]).astype("Int64")  # NULL makes the column float: ids as integers
        in_visit = ids.notna() & ids.isin(list(starts))
        report["events_outside_visits"] = int((~in_visit).sum())
        ev["key"] = np.where(in_visit, "v" + ids.astype(str), "d" + ev["date"].dt.strftime("%Y-%m-%d"))
        ev["date"] = ids.map(starts).where(in_visit, ev["date"])
        rows = pd.DataFrame(
            {
                "person_id": visits["person_id"].astype("int64"),
                "key": "v" + visit_ids.astype(str),
                "date": pd.to_datetime(visits["visit_start_date"]),
            }
        )
        rows = pd.concat([rows, ev[["person_id", "key", "date"]]], ignore_index=True)
    else:
        ev["key"] = "d" + ev["date"].dt.strftime("%Y-%m-%d")
        rows = ev[["person_id", "key", "date"]]
    rows = rows.drop_duplicates(["person_id", "key"]).set_index(["person_id", "key"])
    for col in mapping.columns:
        if col.static:
            continue
        mine = ev[ev["column"] == col.name].sort_values(["person_id", "key", "date"], kind="stable")
        rows[col.name] = _aggregate(mine, ["person_id", "key"], col)
    rows = rows.reset_index().sort_values(["person_id", "date", "key"], kind="stable")
    first = rows.groupby("person_id")["date"].transform("min")
    rows[mapping.time] = (rows["date"] - first).dt.days.astype("int64")
    return rows.rename(columns={"person_id": mapping.id}).drop(columns=["key"])


def _aggregate(mine: pd.DataFrame, by, col) -> pd.Series:
    """The column's values per group, combined as its mapping says (first/last: the first/last recorded)."""
    values = mine["value"] if col.labels else pd.to_numeric(mine["value"], errors="coerce")
    return getattr(values.groupby([mine[k] for k in by]), col.aggregate)()


def _statics(df, events, persons, conditions, mapping: Mapping) -> pd.DataFrame:
    """The person fields, the static columns and the condition flags, repeated on every row."""
    first_date = df.groupby(mapping.id)["date"].min()
    per = pd.DataFrame(index=first_date.index)
    people = persons.set_index(persons["person_id"].astype("int64"))
    for name, spec in mapping.person.items():
        if spec["field"] == "age":
            per[name] = ((first_date - _births(people).reindex(first_date.index)).dt.days / 365.25).round(2)
        else:
            genders = people["gender_concept_id"].reindex(first_date.index)
            unknown = sorted(set(genders.dropna().astype("int64")) - set(spec["labels"]))
            if unknown:
                raise MappingError(
                    f"person.{name}: gender_concept_id {unknown} ({int(genders.isin(unknown).sum())} person(s)) is not in "
                    "its labels; add it (e.g. 8551: unknown)."
                )
            per[name] = genders.map(spec["labels"])
    for col in (c for c in mapping.columns if c.static):
        mine = events[events["column"] == col.name].sort_values(["person_id", "date"], kind="stable")
        per[col.name] = _aggregate(mine, ["person_id"], col).reindex(per.index)
    for name in mapping.conditions:
        having = set(conditions.loc[conditions["column"] == name, "person_id"])
        per[name] = per.index.isin(having).astype("int64")
    return df.drop(columns=["date"]).join(per, on=mapping.id)


def _births(people: pd.DataFrame) -> pd.Series:
    """Birth dates: birth_datetime, else year/month/day_of_birth (missing month: July 1; missing day: the 15th)."""
    month = pd.to_numeric(people.get("month_of_birth", pd.Series(np.nan, index=people.index)), errors="coerce")
    day = pd.to_numeric(people.get("day_of_birth", pd.Series(np.nan, index=people.index)), errors="coerce")
    built = pd.to_datetime(
        pd.DataFrame(
            {
                "year": people["year_of_birth"].astype("int64"),
                "month": month.fillna(7).astype("int64"),
                "day": day.where(month.notna(), 1).fillna(15).astype("int64"),
            }
        ),
        errors="coerce",
    )
    exact = pd.to_datetime(people["birth_datetime"], errors="coerce") if "birth_datetime" in people else built
    return exact.fillna(built)
