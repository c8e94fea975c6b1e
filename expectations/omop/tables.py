"""The OMOP CDM v5.4 tables this project reads and writes (the columns it uses, with the CDM's
names and types), and writing frames into a database in one transaction.

`write_tables(url, schema, frames)` creates the tables and inserts every row in ONE transaction:
either all of them land or none (a failure rolls back the CREATE TABLEs too: PostgreSQL and
SQLite both have transactional DDL; SQLite's driver is told to begin the transaction itself).
Tables that already exist are refused: a release never overwrites another. `schema` is a
PostgreSQL schema (created when missing); SQLite has none (a database file is the target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Column, Date, DateTime, Float, Integer, MetaData, String, Table, event, inspect, text

from expectations.sql import SourceError, db_problem, engine, redact

TYPE_CONCEPT = 32817  # "EHR": the type concept of every row this project writes
_BATCH = 5000


def cdm_tables(schema: str | None) -> dict[str, Table]:
    """The CDM tables (this project's subset of their columns), in `schema`."""
    md = MetaData(schema=schema)
    ids = lambda: [Column("person_id", BigInteger, nullable=False)]  # noqa: E731 - a fresh Column per table
    value = lambda: [  # noqa: E731 - the value columns measurement and observation share
        Column("value_as_number", Float),
        Column("value_as_concept_id", Integer),
        Column("unit_concept_id", Integer),
        Column("unit_source_value", String(50)),
        Column("visit_occurrence_id", BigInteger),
    ]
    tables = [
        Table(
            "person",
            md,
            Column("person_id", BigInteger, primary_key=True, autoincrement=False),
            *[Column(c, Integer, nullable=False) for c in ("gender_concept_id", "year_of_birth")],
            *[Column(c, Integer) for c in ("month_of_birth", "day_of_birth")],
            Column("birth_datetime", DateTime),
            *[Column(c, Integer, nullable=False) for c in ("race_concept_id", "ethnicity_concept_id")],
            *[Column(c, String(50)) for c in ("person_source_value", "gender_source_value")],
        ),
        Table(
            "observation_period",
            md,
            Column("observation_period_id", BigInteger, primary_key=True, autoincrement=False),
            *ids(),
            *[Column(c, Date, nullable=False) for c in ("observation_period_start_date", "observation_period_end_date")],
            Column("period_type_concept_id", Integer, nullable=False),
        ),
        Table(
            "visit_occurrence",
            md,
            Column("visit_occurrence_id", BigInteger, primary_key=True, autoincrement=False),
            *ids(),
            Column("visit_concept_id", Integer, nullable=False),
            *[Column(c, Date, nullable=False) for c in ("visit_start_date", "visit_end_date")],
            Column("visit_type_concept_id", Integer, nullable=False),
        ),
        *[_event_table(md, name, ids(), value()) for name in ("measurement", "observation")],
        Table(
            "condition_occurrence",
            md,
            Column("condition_occurrence_id", BigInteger, primary_key=True, autoincrement=False),
            *ids(),
            Column("condition_concept_id", Integer, nullable=False),
            Column("condition_start_date", Date, nullable=False),
            Column("condition_type_concept_id", Integer, nullable=False),
            Column("visit_occurrence_id", BigInteger),
        ),
    ]
    return {t.name: t for t in tables}


def _event_table(md: MetaData, name: str, ids: list[Column], value: list[Column]) -> Table:
    return Table(
        name,
        md,
        Column(f"{name}_id", BigInteger, primary_key=True, autoincrement=False),
        *ids,
        Column(f"{name}_concept_id", Integer, nullable=False),
        Column(f"{name}_date", Date, nullable=False),
        Column(f"{name}_type_concept_id", Integer, nullable=False),
        *value,
    )


def writer(url: str, what: str):
    """An engine whose transactions cover DDL too (SQLite's driver would otherwise commit CREATE TABLE at once)."""
    eng = engine(url, what)
    if eng.dialect.name == "sqlite":

        @event.listens_for(eng, "connect")
        def _no_driver_transactions(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(eng, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN")

    return eng


CDM_NAMES = ("person", "observation_period", "visit_occurrence", "measurement", "observation", "condition_occurrence")


def check_free(url: str, schema: str | None, names: list[str] | tuple[str, ...]) -> None:
    """A `SourceError` unless the database answers and none of the tables `names` exists in `schema`
    (the check before a release samples anything; `write_tables` checks again inside its transaction)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists() and schema is None:
        return  # a new file: nothing there yet (and none is created by looking)
    eng = writer(url, f"The database {redact(url)}")
    where = redact(url) + (f" schema {schema}" if schema else "")
    try:
        sqlite = eng.dialect.name == "sqlite"
        if sqlite and schema not in (None, "main"):
            raise SourceError(f"The database {where}: SQLite has no schemas; give another database file instead of --db-schema.")
        with eng.connect() as conn:
            taken = sorted(set(names) & set(inspect(conn).get_table_names(schema=None if sqlite else schema)))
    except SQLAlchemyError as exc:
        raise SourceError(f"The database {where} cannot be used ({db_problem(exc)}).") from None
    finally:
        eng.dispose()
    if taken:
        raise SourceError(f"The database {where} already has table(s) {taken}: a release never overwrites; name another target.")


def write_tables(
    url: str,
    schema: str | None,
    frames: dict[str, pd.DataFrame],
    tables: dict[str, Table] | None = None,
    then: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Create `frames`' tables in `schema` and insert their rows, all in one transaction; `then()`
    runs inside it before the commit (an exception there rolls everything back). Tables not in
    `tables` (default: the CDM's) are created from the frame's columns. Returns rows per table."""
    from sqlalchemy.exc import SQLAlchemyError

    eng = writer(url, f"The database {redact(url)}")
    where = f"{redact(url)}" + (f" schema {schema}" if schema else "")
    try:
        if eng.dialect.name == "sqlite" and schema not in (None, "main"):
            raise SourceError(f"The database {where}: SQLite has no schemas; give another database file instead of --db-schema.")
        target = None if eng.dialect.name == "sqlite" else schema
        tables = tables if tables is not None else cdm_tables(target)
        with eng.begin() as conn:
            if schema and eng.dialect.name != "sqlite":
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {conn.dialect.identifier_preparer.quote(schema)}"))
            taken = sorted(set(frames) & set(inspect(conn).get_table_names(schema=target)))
            if taken:
                raise SourceError(
                    f"The database {where} already has table(s) {taken}: a release never overwrites; name another target."
                )
            for name, frame in frames.items():
                table = tables[name] if name in tables else _plain_table(name, frame, target)
                table.create(conn)
                _insert(conn, table, frame)
            if then is not None:
                then()
        return {name: int(len(frame)) for name, frame in frames.items()}
    except SQLAlchemyError as exc:
        raise SourceError(f"Writing to the database {where} failed ({db_problem(exc)}); nothing was written.") from None
    finally:
        eng.dispose()


def _plain_table(name: str, frame: pd.DataFrame, schema: str | None) -> Table:
    """A table for a frame that is not a CDM table (a plain release): one column per frame column."""
    kinds = {"i": BigInteger, "u": BigInteger, "f": Float, "b": Integer, "M": DateTime}
    columns = [Column(str(c), kinds.get(frame[c].dtype.kind, String)) for c in frame.columns]
    return Table(name, MetaData(schema=schema), *columns)


def _insert(conn, table: Table, frame: pd.DataFrame) -> None:
    for start in range(0, len(frame), _BATCH):
        part = frame.iloc[start : start + _BATCH]
        records = [{k: _plain(v) for k, v in row.items()} for row in part.to_dict("records")]
        if records:
            conn.execute(table.insert(), records)


def _plain(v):
    """A value as the database driver takes it: None for missing, Python numbers for numpy ones."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v
