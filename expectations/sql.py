"""Extracts from SQL databases: a small source file names the database and the query, and the
result is read in chunks and fingerprinted while it streams.

A source file ends in ``.source.yaml`` (or ``.sql.yaml``) and holds::

    url: postgresql://postgres@127.0.0.1:5432/warehouse   # a SQLAlchemy URL, no password in it
    # url_env: WAREHOUSE_URL     # or: the name of an environment variable holding the URL
    query: SELECT * FROM extract_view                     # or: table: extract_view
    order_by: [person_id, day]   # optional: the canonical order (the other columns follow)
    chunksize: 50000             # optional: rows per chunk

Credentials never live in the file: a URL in it that holds a password is refused; PostgreSQL
reads the password from ``PGPASSWORD`` or ``~/.pgpass`` itself, or the whole URL comes from the
environment variable `url_env` names. Every URL shown anywhere passes through `redact`.

A relative SQLite path (``sqlite:///cohort.db``) is read relative to the source file's folder.
The fingerprint is the SHA-256 of the query text run (the canonical ORDER BY included), the
column names and every row in that order, as the database returns them: the same result gives
the same fingerprint and any changed, added or removed row another one. Errors are
`SourceError`s that name the source file, the redacted URL and the problem, never a value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from diffusion.errors import InputError
from diffusion.yamlfile import read_yaml

SOURCE_ENDINGS = (".source.yaml", ".source.yml", ".sql.yaml", ".sql.yml")
_KEYS = {"url", "url_env", "query", "table", "order_by", "chunksize"}
DEFAULT_CHUNK = 50_000


class SourceError(InputError):
    """A SQL source that cannot be read: a bad source file, URL, connection or query."""


def is_source(path: str | Path) -> bool:
    """Whether `path` names a SQL source file (by its ending)."""
    return str(path).lower().endswith(SOURCE_ENDINGS)


def redact(url: Any) -> str:
    """`url` as text with any password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say nothing of what it holds
        return "<a URL that does not parse>"


@dataclass(frozen=True)
class Source:
    """A parsed source file."""

    path: Path
    url: str = field(repr=False)  # may hold a password from the environment: shown only through `shown`
    query: str
    order_by: tuple[str, ...] = ()
    chunksize: int = DEFAULT_CHUNK

    @property
    def shown(self) -> str:
        return redact(self.url)


def load_source(path: str | Path) -> Source:
    """The source file at `path`, checked (every problem in one `SourceError`)."""
    path = Path(path)
    spec = read_yaml(path, "SQL source file", SourceError)
    if not isinstance(spec, dict):
        raise SourceError(f"SQL source file {path} must be a mapping with keys url (or url_env) and query (or table).")
    problems = [f"unknown key(s) {sorted(set(spec) - _KEYS)}"] if set(spec) - _KEYS else []
    url = _url(spec, path, problems)
    query = _query(spec, problems)
    order_by = spec.get("order_by") or []
    if isinstance(order_by, str):
        order_by = [order_by]
    if not isinstance(order_by, list) or not all(isinstance(c, str) for c in order_by):
        problems.append("order_by must be a list of column names")
    chunk = spec.get("chunksize", DEFAULT_CHUNK)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        problems.append("chunksize must be a positive integer")
    if problems:
        raise SourceError(f"SQL source file {path}: " + "; ".join(problems) + ".")
    return Source(path.resolve(), _relative_sqlite(url, path), query, tuple(order_by), chunk)


def _url(spec: dict, path: Path, problems: list[str]) -> str:
    from sqlalchemy.engine import make_url

    if ("url" in spec) == ("url_env" in spec):
        problems.append("give exactly one of url (a SQLAlchemy URL) and url_env (an environment variable holding one)")
        return ""
    if "url_env" in spec:
        name = str(spec["url_env"])
        if not os.environ.get(name):
            problems.append(f"the environment variable {name} (url_env) is not set")
        return os.environ.get(name, "")
    url = str(spec["url"])
    try:
        if make_url(url).password is not None:
            problems.append(
                f"its url {redact(url)} holds a password: keep credentials out of files (PGPASSWORD, ~/.pgpass, "
                "or url_env naming an environment variable that holds the whole URL)"
            )
    except Exception:
        problems.append("its url is not a SQLAlchemy URL (e.g. sqlite:///cohort.db, postgresql://user@host:5432/db)")
    return url


def _query(spec: dict, problems: list[str]) -> str:
    if ("query" in spec) == ("table" in spec):
        problems.append("give exactly one of query (a SELECT) and table (a table or view name)")
        return ""
    if "table" in spec:
        parts = str(spec["table"]).split(".")
        if not all(p.replace("_", "").isalnum() for p in parts):
            problems.append("table must be a plain name (letters, digits, underscores; schema.table allowed)")
        return "SELECT * FROM " + ".".join(f'"{p}"' for p in parts)
    query = str(spec["query"]).strip().rstrip(";").strip()
    if not query:
        problems.append("query is empty")
    return query


def _relative_sqlite(url: str, path: Path) -> str:
    """A relative SQLite file path, read relative to the source file's folder."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return url
    if Path(parsed.database).is_absolute():
        return url
    return parsed.set(database=str((path.resolve().parent / parsed.database).resolve())).render_as_string(hide_password=False)


# ---- reading -----------------------------------------------------------------------------------
def engine(url: str, what: str):
    """A SQLAlchemy engine for `url`; a bad URL or a missing driver is a `SourceError`."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":  # the project's driver (SQLAlchemy 2.1 would look for psycopg 3)
            parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise SourceError(f"{what}: the URL {redact(url)} cannot be used ({type(exc).__name__}).") from None


def missing_file(url: str, what: str) -> None:
    """A SQLite URL of a file that is not there is a `SourceError` (connecting would create an empty one)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return
    db = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and db
        and db != ":memory:"
        and not db.startswith("file:")
        and not Path(db).is_file()
    ):
        raise SourceError(f"{what}: the SQLite database file {db} does not exist.")


def db_problem(exc: BaseException) -> str:
    """What went wrong in the database, in words that quote no value: the driver's first line for
    connection, table and syntax problems (names only), the error's kind alone for data errors."""
    from sqlalchemy.exc import DataError, IntegrityError

    if isinstance(exc, (DataError, IntegrityError)):  # these messages may quote a cell
        return type(exc).__name__
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return first[:300]


def _canonical_query(conn, src: Source) -> tuple[str, list[str]]:
    """The query wrapped with an ORDER BY over every column (`order_by` first), and its columns."""
    from sqlalchemy import text

    probe = conn.execute(text(f"SELECT * FROM ({src.query}) AS hg_source LIMIT 0"))
    columns = list(probe.keys())
    probe.close()
    missing = [c for c in src.order_by if c not in columns]
    if missing:
        raise SourceError(f"SQL source {src.path}: order_by names column(s) {missing} that the query does not return.")
    quote = conn.dialect.identifier_preparer.quote
    order = list(src.order_by) + [c for c in columns if c not in src.order_by]
    return f"SELECT * FROM ({src.query}) AS hg_source ORDER BY {', '.join(quote(c) for c in order)}", columns


def stream(src: Source) -> Iterator[tuple[list[str], list[tuple], "hashlib._Hash"]]:
    """(columns, rows of one chunk, the running hash) per chunk of the result in canonical order."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    missing_file(src.url, f"SQL source {src.path}")
    eng = engine(src.url, f"SQL source {src.path}")
    try:
        with eng.connect() as conn:
            sql, columns = _canonical_query(conn, src)
            digest = hashlib.sha256(sql.encode() + b"\x00" + repr(columns).encode() + b"\x00")
            result = conn.execution_options(stream_results=True, yield_per=src.chunksize).execute(text(sql))
            for part in result.partitions(src.chunksize):
                rows = [tuple(r) for r in part]
                for row in rows:
                    digest.update(repr(row).encode())
                    digest.update(b"\n")
                yield columns, rows, digest
            yield columns, [], digest  # the end: the hash is complete
    except SQLAlchemyError as exc:
        raise SourceError(f"SQL source {src.path} ({src.shown}): the query failed ({db_problem(exc)}).") from None
    finally:
        eng.dispose()


def fingerprint_source(path: str | Path) -> str:
    """The source's fingerprint, streaming the result without keeping it."""
    digest = None
    for _, _, digest in stream(load_source(path)):
        pass
    return digest.hexdigest()


def read_source(path: str | Path) -> tuple[pd.DataFrame, str]:
    """(the result as a DataFrame, its fingerprint), read in chunks."""
    src = load_source(path)
    frames, columns, digest = [], [], None
    for columns, rows, digest in stream(src):
        if rows:
            frames.append(pd.DataFrame.from_records(rows, columns=columns))
    if not frames:
        raise SourceError(f"SQL source {src.path} ({src.shown}) returned no rows ({len(columns)} column(s)).")
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return _plain_types(df), digest.hexdigest()


def _plain_types(df: pd.DataFrame) -> pd.DataFrame:
    """Database values as the types a CSV reader gives: NUMERIC as float, dates as datetimes."""
    for col in df.columns:
        s = df[col]
        if s.dtype != object:
            continue
        kinds = {type(v) for v in s.dropna()}
        if kinds and kinds <= {decimal.Decimal, int, float}:
            df[col] = pd.to_numeric(s.map(lambda v: None if v is None else float(v)))
        elif kinds and kinds <= {dt.date, dt.datetime, pd.Timestamp}:
            df[col] = pd.to_datetime(s)
    return df.infer_objects()
