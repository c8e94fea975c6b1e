"""A release into a database as well as its folder: the synthetic rows as OMOP CDM tables (with
a mapping file) or as one plain table, written in one transaction.

A target is given as a dict (the release flow's `to_db` parameter, from `healthgym release
--to-db URL | --to-db-env NAME [--db-schema S] [--omop MAP.yaml | --db-table T] [--anchor-date D]`):
``{"url": ..., "url_env": ..., "schema": ..., "omop": ..., "table": ..., "anchor": "2000-01-01"}``.
The URL holds no password (refused: PGPASSWORD, ~/.pgpass or url_env instead); what is shown of
it anywhere is redacted. OMOP tables carry only synthetic ids (the release's own, negative
person ids; negative event ids) and dates from the synthetic `anchor` plus the release's time
offsets: no real id and no real date.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

import pandas as pd

from diffusion.data.schema import Schema
from expectations.omop.convert import to_omop
from expectations.omop.mapping import Mapping, MappingError, load_mapping
from expectations.omop.tables import CDM_NAMES, check_free, write_tables
from expectations.sql import SourceError, redact

DEFAULT_ANCHOR = "2000-01-01"
_KEYS = {"url", "url_env", "schema", "omop", "table", "anchor"}


@dataclass(frozen=True)
class DatabaseTarget:
    url: str = field(repr=False)  # may hold a password from the environment: shown only through `shown`
    schema: str | None
    mapping: Mapping | None
    table: str | None
    anchor: date

    @property
    def shown(self) -> str:
        return redact(self.url)

    def frames(self, synthetic: pd.DataFrame, name: str) -> dict[str, pd.DataFrame]:
        """The tables to write: the OMOP frames, or {table: the synthetic rows}."""
        if self.mapping is not None:
            return to_omop(synthetic, self.mapping, self.anchor, id_sign=-1)
        return {self.table or f"{name}_synthetic": synthetic}

    def describe(self, frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
        """The manifest's entry: the target (URL redacted), the schema, the kind, rows per table."""
        out = {
            "target": self.shown,
            "schema": self.schema,
            "kind": "omop" if self.mapping is not None else "table",
            "rows": {t: int(len(f)) for t, f in frames.items()},
        }
        if self.mapping is not None:
            out["anchor_date"] = self.anchor.isoformat()
        return out

    def write(self, frames: dict[str, pd.DataFrame], then: Callable[[], None] | None = None) -> dict[str, int]:
        """Every table in one transaction; `then()` runs before the commit."""
        return write_tables(self.url, self.schema, frames, then=then)


def database_target(spec: dict[str, Any], schema: Schema) -> DatabaseTarget:
    """The target `spec` names, checked against the model's schema, and its tables not there yet
    (before anything is sampled)."""
    from sqlalchemy.engine import make_url

    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise SourceError(f"The database target has unknown key(s) {unknown}.")
    if bool(spec.get("url")) == bool(spec.get("url_env")):
        raise SourceError("Name the database once: --to-db URL or --to-db-env NAME (an environment variable holding the URL).")
    if spec.get("url_env") and not os.environ.get(spec["url_env"]):
        raise SourceError(f"The environment variable {spec['url_env']} (--to-db-env) is not set.")
    url = spec.get("url") or os.environ[spec["url_env"]]
    try:
        password = make_url(url).password
    except Exception:
        raise SourceError("--to-db is not a SQLAlchemy URL (e.g. sqlite:///release.db, postgresql://user@host/db).") from None
    if spec.get("url") and password is not None:
        raise SourceError(
            f"--to-db {redact(url)} holds a password: keep credentials out of command lines "
            "(PGPASSWORD, ~/.pgpass, or --to-db-env naming an environment variable that holds the URL)."
        )
    if spec.get("omop") and spec.get("table"):
        raise SourceError("A database release is OMOP tables (--omop MAP.yaml) or one table (--db-table), not both.")
    mapping = load_mapping(spec["omop"]) if spec.get("omop") else None
    if mapping is not None:
        _fits(mapping, schema)
    try:
        anchor = date.fromisoformat(str(spec.get("anchor") or DEFAULT_ANCHOR))
    except ValueError:
        raise SourceError(f"--anchor-date must be a date (YYYY-MM-DD), not {spec.get('anchor')!r}.") from None
    check_free(url, spec.get("schema"), CDM_NAMES if mapping is not None else [spec.get("table") or f"{schema.name}_synthetic"])
    return DatabaseTarget(url, spec.get("schema"), mapping, spec.get("table"), anchor)


def _fits(mapping: Mapping, schema: Schema) -> None:
    """The mapping names the schema's id, time and columns (each released column has a way back to OMOP)."""
    columns = {c.name for c in schema.columns}
    problems = []
    if (mapping.id, mapping.time) != (schema.id, schema.time):
        problems.append(f"its id/time are {mapping.id}/{mapping.time}, the model's {schema.id}/{schema.time}")
    if set(mapping.names) - columns:
        problems.append(f"it maps column(s) {sorted(set(mapping.names) - columns)} the model does not make")
    if columns - set(mapping.names):
        problems.append(f"column(s) {sorted(columns - set(mapping.names))} of the model have no concept in it")
    if problems:
        raise MappingError(f"The OMOP mapping does not fit model {schema.name}: " + "; ".join(problems) + ".")
