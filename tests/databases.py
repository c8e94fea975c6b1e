"""Databases for the SQL and OMOP tests: a fresh PostgreSQL database per test module (the
server at 127.0.0.1:5432 that every machine of this project has; unreachable is a failure, not a
skip) and SQLite files. Each PostgreSQL database has a unique name and is dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def pg_url(database: str, password: str | None = None) -> str:
    auth = f"{PG_USER}:{password}" if password else PG_USER
    return f"postgresql://{auth}@{PG_HOST}:{PG_PORT}/{database}"


def _admin():
    import psycopg2

    try:
        con = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is needed by these tests (CI has it) and does not answer: {exc}")
    con.autocommit = True
    return con


@contextlib.contextmanager
def pg_database(prefix: str = "hg_test") -> Iterator[str]:
    """A new empty PostgreSQL database; yields its name, drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    con = _admin()
    with con.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with con.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.close()


def pg_execute(database: str, *statements: str) -> list:
    """Run statements (autocommit) in `database`; the last one's rows, if it returns any."""
    import psycopg2

    con = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database)
    con.autocommit = True
    rows: list = []
    try:
        with con.cursor() as cur:
            for s in statements:
                cur.execute(s)
                rows = cur.fetchall() if cur.description else []
    finally:
        con.close()
    return rows
