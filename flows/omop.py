"""The command line's database parts: `healthgym omop extract` and `omop load`, and the
`release` flags that also write a release into a database (README: "Extracts from SQL
databases and OMOP"). Database URLs come from a flag without a password, or from an
environment variable the flag names; they are shown redacted."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from diffusion.errors import InputError


def database_flags(r) -> None:
    """`release`'s database flags."""
    r.add_argument("--to-db", metavar="URL", help="also write the release into this database (SQLAlchemy URL, no password)")
    r.add_argument("--to-db-env", metavar="NAME", help="... or into the database whose URL this environment variable holds")
    r.add_argument("--db-schema", metavar="S", help="the PostgreSQL schema of the tables (created when missing)")
    r.add_argument("--omop", metavar="MAP.yaml", help="write OMOP CDM tables, concepts from this mapping file")
    r.add_argument("--db-table", metavar="T", help="the plain table's name (without --omop; default <name>_synthetic)")
    r.add_argument("--anchor-date", metavar="YYYY-MM-DD", help="OMOP dates: this synthetic date + the time offsets (2000-01-01)")


def release_target(args) -> dict[str, Any] | None:
    """The release flow's `to_db`, or None; database flags without a database are bad input."""
    if not (args.to_db or args.to_db_env):
        if args.db_schema or args.omop or args.db_table or args.anchor_date:
            raise InputError("--db-schema, --omop, --db-table and --anchor-date need --to-db URL or --to-db-env NAME.")
        return None
    if args.omop and not Path(args.omop).is_file():
        raise InputError(f"The OMOP mapping file {args.omop} does not exist.")
    spec = {
        "url": args.to_db,
        "url_env": args.to_db_env,
        "schema": args.db_schema,
        "omop": str(Path(args.omop).resolve()) if args.omop else None,
        "table": args.db_table,
        "anchor": args.anchor_date,
    }
    return {k: v for k, v in spec.items() if v}


def _url(args) -> str:
    """The URL of --url (no password in it) or of the environment variable --url-env names."""
    from expectations.sql import SourceError, redact

    if bool(args.url) == bool(args.url_env):
        raise InputError("Name the database once: --url URL or --url-env NAME (an environment variable holding the URL).")
    if args.url_env:
        if not os.environ.get(args.url_env):
            raise InputError(f"The environment variable {args.url_env} (--url-env) is not set.")
        return os.environ[args.url_env]
    from sqlalchemy.engine import make_url

    try:
        password = make_url(args.url).password
    except Exception:
        raise SourceError("--url is not a SQLAlchemy URL (e.g. sqlite:///omop.db, postgresql://user@host:5432/db).") from None
    if password is not None:
        raise SourceError(
            f"--url {redact(args.url)} holds a password: keep it out of command lines (PGPASSWORD, ~/.pgpass, or --url-env)."
        )
    return args.url


def cmd_omop_extract(args) -> int:
    """OMOP tables -> the long extract (CSV or Parquet) and a draft schema; the report on stdout."""
    from diffusion.data.inference import infer_schema
    from expectations.omop.extract import omop_extract
    from expectations.omop.mapping import load_mapping

    out = Path(args.out)
    if not out.name.lower().endswith((".csv", ".parquet", ".pq")):
        raise InputError(f"--out {out} must end in .csv or .parquet.")
    mapping = load_mapping(args.mapping)
    df, report = omop_extract(_url(args), args.cdm_schema, mapping)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    df.to_csv(partial, index=False) if out.suffix.lower() == ".csv" else df.to_parquet(partial, index=False)
    os.replace(partial, out)
    print(f"Wrote the extract {out}: {report['rows']} rows, {report['patients']} patients, from {report['source']}.")
    if args.schema_out:
        schema = infer_schema(df, id_col=mapping.id, time_col=mapping.time, name=mapping.name)
        Path(args.schema_out).write_text(
            "# Draft schema inferred from the OMOP extract: check types, bounds and categories before use.\n" + schema.to_yaml()
        )
        print(f"Wrote the draft schema {args.schema_out}.")
    if args.report_out:
        Path(args.report_out).write_text(json.dumps(report, indent=1))
    for column, units in report["units"].items():
        if units:
            print(f"units of {column}: " + ", ".join(f"{u} ({n} rows)" for u, n in units.items()))
    for table, counts in report["unmapped_concepts"].items():
        if counts:
            print(f"unmapped concepts in {table} (left out): " + ", ".join(f"{c} ({n} rows)" for c, n in counts.items()))
    if report.get("events_outside_visits"):
        print(f"{report['events_outside_visits']} mapped row(s) had no visit_occurrence: grouped by their date.")
    for w in report["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_omop_load(args) -> int:
    """A long extract -> OMOP tables (the demo's source database)."""
    from datetime import date

    from expectations.omop.load import load_extract
    from expectations.omop.mapping import load_mapping
    from expectations.reading import read_extract
    from expectations.sql import redact

    mapping = load_mapping(args.mapping)
    try:
        anchor = date.fromisoformat(args.anchor_date)
    except ValueError:
        raise InputError(f"--anchor-date must be a date (YYYY-MM-DD), not {args.anchor_date!r}.") from None
    url = _url(args)
    rows = load_extract(read_extract(args.data), mapping, url, args.cdm_schema, anchor, args.spread_days)
    where = redact(url) + (f" schema {args.cdm_schema}" if args.cdm_schema else "")
    print(f"Loaded {args.data} into the OMOP tables of {where}: " + ", ".join(f"{t} {n} rows" for t, n in rows.items()) + ".")
    return 0


def omop_commands(sub) -> None:
    """omop extract, omop load."""
    om = sub.add_parser("omop", help="OMOP CDM databases: build an extract from one, or load an extract into one")
    oms = om.add_subparsers(dest="omop_command", required=True)
    ex = oms.add_parser("extract", help="OMOP tables -> the long extract and a draft schema")
    lo = oms.add_parser("load", help="a long extract -> OMOP tables (e.g. the bundled PBC cohort, for the demo)")
    lo.add_argument("data", help="the extract (CSV or Parquet), e.g. the bundled flows/data/pbcseq.csv")
    for p in (ex, lo):
        p.add_argument("--url", help="the database's SQLAlchemy URL, without a password (PGPASSWORD, ~/.pgpass)")
        p.add_argument("--url-env", metavar="NAME", help="... or the environment variable holding the URL")
        p.add_argument("--cdm-schema", default=None, help="the schema of the CDM tables (PostgreSQL)")
        p.add_argument(
            "--mapping", required=True, help="the mapping file (concepts -> columns), e.g. flows/data/pbc_omop_mapping.yaml"
        )
    ex.add_argument("--out", required=True, help="the extract to write (.csv or .parquet)")
    ex.add_argument("--schema-out", help="where to write a draft schema of the extract")
    ex.add_argument("--report-out", help="where to write the report (units, unmapped concepts) as JSON")
    ex.set_defaults(func=cmd_omop_extract)
    lo.add_argument("--anchor-date", default="1974-01-01", help="first visits are drawn from this date on (default 1974-01-01)")
    lo.add_argument("--spread-days", type=int, default=3650, help="... up to this many days later (default 3650)")
    lo.set_defaults(func=cmd_omop_load)
