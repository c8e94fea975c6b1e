"""The expectation suite of a schema: derived from it (`build_suite`), saved as GX 1.x JSON
(`save_suite`) for a data steward to read and tighten, and extended by hand-written
expectations kept beside the schema file (`load_extra_expectations`). Checks GX has no native
expectation for read derived columns named ``<column>::<check>`` (`derived`), which
`expectations.frame` computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffusion.data.schema import Column, Schema
from diffusion.errors import InputError

SEP = "::"  # derived column names: "<column>::<check>"
SUITES_DIR = Path(__file__).parent / "suites"
EXTRA_SUFFIX = ".expectations.json"


def derived(column: str, check: str) -> str:
    return f"{column}{SEP}{check}"


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def _exp(type_: str, kwargs: dict, column: str, check: str, description: str, notes: str | None = None) -> dict:
    out: dict[str, Any] = {
        "type": type_,
        "kwargs": kwargs,
        "meta": {"column": column, "check": check, "description": description},
    }
    if notes:
        out["notes"] = notes
    return out


def _true_on(column: str, check: str, description: str, notes: str) -> dict:
    """The derived column `<column>::<check>` must be True on every row."""
    return _exp(
        "expect_column_values_to_be_in_set",
        {"column": derived(column, check), "value_set": [True]},
        column,
        check,
        description,
        notes,
    )


def build_suite(schema: Schema) -> dict:
    """The GX 1.x suite (as JSON-able dict) that the schema implies."""
    exps = _table_expectations(schema)
    for c in schema.columns:
        exps.extend(_column_expectations(c))
    return {
        "name": schema.name,
        "expectations": exps,
        "meta": {
            "generated_from": "schema",
            "schema": schema.name,
            "id": schema.id,
            "time": schema.time,
            "max_length": schema.max_length,
            "note": (
                f"Derived columns are named '<column>{SEP}<check>'. Tighten by editing kwargs; add hand-written "
                f"expectations in '<schema>{EXTRA_SUFFIX}' beside the schema file."
            ),
        },
    }


def _table_expectations(schema: Schema) -> list[dict]:
    """Every column present, rows, ids and times present, times numbers (or dates) increasing per patient."""
    idc, tc = schema.id, schema.time
    exps = [
        _exp("expect_column_to_exist", {"column": col}, col, "present", "required by the schema but missing from the extract")
        for col in [idc, tc, *schema.column_names]
    ]
    exps.append(_exp("expect_table_row_count_to_be_between", {"min_value": 1}, "table", "rows", "at least one row"))
    exps.append(
        _exp(
            "expect_column_values_to_not_be_null",
            {"column": idc},
            idc,
            "not_null",
            "the patient id must never be missing",
            notes="Patient ids are replaced by anonymous codes before validation; no id reaches results or docs.",
        )
    )
    exps.append(_exp("expect_column_values_to_not_be_null", {"column": tc}, tc, "not_null", "the time must never be missing"))
    dates = schema.time_unit is not None
    exps.append(
        _true_on(
            tc,
            "is_number",
            "time values must be dates or datetimes (ISO 8601, such as 2024-03-01 or 2024-03-01T08:30)"
            if dates
            else "time values must be finite numbers (no text, no infinity)",
            f"Derived: True where `{tc}` is missing or reads as an ISO 8601 date."
            if dates
            else f"Derived: True where `{tc}` is missing or a finite number.",
        )
    )
    exps.append(
        _exp(
            "expect_compound_columns_to_be_unique",
            {"column_list": [idc, derived(tc, "number")]},
            f"{idc}, {tc}",
            "unique_visit",
            f"each ({idc}, {tc}) pair must be unique (duplicated visits)",
            notes=f"Checked on the patient code and `{tc}` as a number (dates as {schema.time_unit or 'number'}s since 1970).",
        )
    )
    exps.append(
        _true_on(
            tc,
            "increasing",
            "times must be strictly increasing within each patient (no repeated time)",
            f"Derived: rows sorted by ({idc}, {tc}); False where a patient's time does not exceed the previous one.",
        )
    )
    exps.append(
        _exp(
            "expect_column_unique_value_count_to_be_between",
            {"column": idc, "min_value": schema.min_patients},
            idc,
            "min_patients",
            f"at least {schema.min_patients} patients",
        )
    )
    return exps


def _column_expectations(c: Column) -> list[dict]:
    """A column's missing rate, its type's values (numbers and bounds, dates, categories, 0/1) and staticness."""
    out: list[dict] = []
    rate = c.allowed_missing
    if rate <= 0:
        out.append(
            _exp("expect_column_values_to_not_be_null", {"column": c.name}, c.name, "missing", "no missing values (not nullable)")
        )
    elif rate < 1:
        kw = {"column": c.name, "mostly": round(1.0 - rate, 10)}
        out.append(_exp("expect_column_values_to_not_be_null", kw, c.name, "missing", f"at most {rate:.0%} missing values"))
    if c.numeric:
        out.extend(_number_expectations(c))
    elif c.type == "date":
        out.append(
            _true_on(
                c.name,
                "is_date",
                "values must be dates (ISO 8601, such as 1961-07-14)",
                f"Derived: True where `{c.name}` is missing or reads as an ISO 8601 date.",
            )
        )
    elif c.type == "categorical":
        out.append(
            _exp(
                "expect_column_values_to_be_in_set",
                {"column": derived(c.name, "label"), "value_set": list(c.categories or ())},
                c.name,
                "categories",
                f"values must be one of the declared categories {list(c.categories or ())}",
                notes=f'Derived: `{c.name}` as canonical labels (1, 1.0 and "1" are all "1").',
            )
        )
    elif c.type == "binary":
        out.append(
            _exp(
                "expect_column_values_to_be_in_set",
                {"column": derived(c.name, "is_binary"), "value_set": [True]},
                c.name,
                "binary",
                "values must be 0/1 or true/false",
                notes=f"Derived: True where `{c.name}` is missing or reads as 0/1/true/false.",
            )
        )
    if c.static:
        out.append(
            _true_on(
                c.name,
                "static",
                "a static column must keep one value per patient",
                f"Derived: False on every row of a patient whose `{c.name}` takes more than one value.",
            )
        )
    return out


def _number_expectations(c: Column) -> list[dict]:
    """Finite numbers, whole ones for integers, within the declared bounds."""
    out = [
        _true_on(
            c.name,
            "is_number",
            "values must be finite numbers (no text, no infinity)",
            f"Derived: True where `{c.name}` is missing or a finite number.",
        )
    ]
    if c.type == "integer":
        out.append(
            _true_on(
                c.name,
                "is_integer",
                "values must be whole numbers",
                f"Derived: True where `{c.name}` is missing, not a number, or a whole number.",
            )
        )
    if c.min is None and c.max is None:
        return out
    kw: dict[str, Any] = {"column": derived(c.name, "number")}
    if c.min is not None:
        kw["min_value"] = c.min
    if c.max is not None:
        kw["max_value"] = c.max
    if c.min is not None and c.max is not None:
        bounds = f"within [{_fmt(c.min)}, {_fmt(c.max)}]"
    else:
        bounds = f"at least {_fmt(c.min)}" if c.min is not None else f"at most {_fmt(c.max)}"
    notes = f"Derived: `{c.name}` as a number (text and infinity left out: checked on their own)."
    out.append(_exp("expect_column_values_to_be_between", kw, c.name, "bounds", f"values must be {bounds}", notes=notes))
    return out


def save_suite(schema: Schema, path: str | Path | None = None) -> Path:
    """Write the schema's suite as GX 1.x JSON (default: expectations/suites/<name>.json)."""
    path = Path(path) if path is not None else SUITES_DIR / f"{schema.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_suite(schema), indent=2) + "\n")
    return path


def load_extra_expectations(schema_path: str | Path) -> list[dict]:
    """Hand-written expectations kept beside the schema: ``pbc.yaml`` -> ``pbc.expectations.json``.

    The file holds a JSON list of GX expectations (``{"type", "kwargs", "meta"?}``), or a suite
    object with an ``expectations`` list. Absent file: ``[]``.
    """
    schema_path = Path(schema_path)
    stem = schema_path.name
    for suffix in (".yaml", ".yml"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    path = schema_path.with_name(stem + EXTRA_SUFFIX)
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"Hand-written expectations {path} are not valid JSON ({type(exc).__name__}: {getattr(exc, 'msg', exc)})."
        ) from None
    if isinstance(raw, dict) and isinstance(raw.get("expectations"), list):
        raw = raw["expectations"]
    if not isinstance(raw, list):
        raise InputError(
            f'Hand-written expectations {path} must be a JSON list of expectations ({{"type": ..., "kwargs": {{...}}}}).'
        )
    problems = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(e.get("kwargs", {}), dict):
            problems.append(f'entry {i + 1} is not of the form {{"type": "expect_...", "kwargs": {{...}}}}')
    if problems:
        raise InputError(f"Hand-written expectations {path}: " + "; ".join(problems) + ".")
    return [dict(e) for e in raw]
