"""Validating an extract against its schema with Great Expectations.

The suite is derived from the schema (`build_suite`), kept as GX 1.x JSON (`save_suite`) so a
data steward can read and tighten it, and extended per schema by hand-written expectations
kept beside the schema file (`load_extra_expectations`: ``pbc.yaml`` -> ``pbc.expectations.json``).

How the extract reaches GX (`_gx_frame`):

* the patient id column is replaced by anonymous integer codes (missing stays missing), so no
  patient id can ever reach a GX result, a log line or the Data Docs;
* the schema's columns are passed as read (their missing rates are checked there);
* checks GX has no native expectation for are computed in pandas as derived columns named
  ``<column>::<check>`` (normalised numbers, canonical category labels, boolean flags such as
  "constant within patient") that a native GX expectation then checks. They are part of the
  suite and of the Data Docs like every other expectation.
* columns the schema does not name are left out (ignored, with a warning), so an extract with
  hundreds of extra columns costs nothing.

Results are requested with ``partial_unexpected_count: 0`` and no unexpected rows, so GX keeps
only counts; messages are built from column names, the expectation and counts.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffusion.errors import InputError
from diffusion.schema import FALSE_LABELS, TRUE_LABELS, Column, Schema, canonical_label

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

log = logging.getLogger(__name__)

SEP = "::"  # derived column names: "<column>::<check>"
SUITES_DIR = Path(__file__).parent / "suites"
EXTRA_SUFFIX = ".expectations.json"
DOCS_SITE = "healthgym"
# Counts only: no unexpected values, no unexpected rows, no index lists.
RESULT_FORMAT = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}
_COUNT_OBSERVED = {"expect_column_unique_value_count_to_be_between", "expect_table_row_count_to_be_between"}


class ExtractValidationError(InputError):
    """An extract that failed validation; `.report` holds the full ValidationReport."""

    def __init__(self, message: str, report: "ValidationReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Failure:
    """One failed expectation: which column, which expectation, what was expected, how many rows."""

    column: str
    expectation: str
    description: str
    unexpected_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "expectation": self.expectation,
            "description": self.description,
            "unexpected_count": self.unexpected_count,
        }

    def sentence(self) -> str:
        if self.column == "table":
            where = "the table"
        elif ", " in self.column:
            where = "columns " + ", ".join(f"'{c}'" for c in self.column.split(", "))
        else:
            where = f"column '{self.column}'"
        text = f"{where}: {self.description}"
        if self.unexpected_count is not None:
            n = self.unexpected_count
            text += f" ({n} row{' fails' if n == 1 else 's fail'})"
        return text


@dataclass
class ValidationReport:
    success: bool
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    docs_path: Path | None = None
    suite_name: str = ""

    def message(self) -> str:
        """One paragraph: every failed expectation with its column, what was expected and how many rows."""
        if self.success:
            s = self.summary
            return (
                f"Extract passed validation against suite '{self.suite_name}': {s.get('passed', 0)} of "
                f"{s.get('evaluated', 0)} expectations met ({s.get('rows', 0)} rows, {s.get('patients', 0)} patients)."
            )
        n = len(self.failures)
        total = self.summary.get("evaluated", n)
        text = (
            f"Extract failed validation against suite '{self.suite_name}': {n} of {total} expectation"
            f"{'s' if total != 1 else ''} failed: " + "; ".join(f.sentence() for f in self.failures) + "."
        )
        if self.docs_path is not None:
            text += f" Details: {self.docs_path}."
        return " ".join(text.split())  # one paragraph, whatever a description held

    def raise_for_failures(self) -> None:
        if not self.success:
            raise ExtractValidationError(self.message(), report=self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "suite": self.suite_name,
            "failures": [f.to_dict() for f in self.failures],
            "warnings": list(self.warnings),
            "summary": dict(self.summary),
            "profile": copy.deepcopy(self.profile),
            "docs_path": str(self.docs_path) if self.docs_path is not None else None,
        }


# ---- the suite ------------------------------------------------------------------------------
def _d(column: str, check: str) -> str:
    return f"{column}{SEP}{check}"


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def _exp(type_: str, kwargs: dict, column: str, check: str, description: str, notes: str | None = None) -> dict:
    out: dict[str, Any] = {"type": type_, "kwargs": kwargs, "meta": {"column": column, "check": check, "description": description}}
    if notes:
        out["notes"] = notes
    return out


def build_suite(schema: Schema) -> dict:
    """The GX 1.x suite (as JSON-able dict) that the schema implies."""
    idc, tc = schema.id, schema.time
    exps: list[dict] = []
    for col in [idc, tc, *schema.column_names]:
        exps.append(_exp("expect_column_to_exist", {"column": col}, col, "present", "required by the schema but missing from the extract"))
    exps.append(_exp("expect_table_row_count_to_be_between", {"min_value": 1}, "table", "rows", "at least one row"))
    exps.append(_exp("expect_column_values_to_not_be_null", {"column": idc}, idc, "not_null", "the patient id must never be missing",
                     notes="Patient ids are replaced by anonymous codes before validation; no id reaches results or docs."))
    exps.append(_exp("expect_column_values_to_not_be_null", {"column": tc}, tc, "not_null", "the time must never be missing"))
    exps.append(_exp("expect_column_values_to_be_in_set", {"column": _d(tc, "is_number"), "value_set": [True]}, tc, "is_number",
                     "time values must be finite numbers (no text, no infinity)",
                     notes=f"Derived: True where `{tc}` is missing or a finite number."))
    exps.append(_exp("expect_compound_columns_to_be_unique", {"column_list": [idc, _d(tc, "number")]}, f"{idc}, {tc}", "unique_visit",
                     f"each ({idc}, {tc}) pair must be unique (duplicated visits)",
                     notes=f"Checked on the patient code and `{tc}` as a number."))
    exps.append(_exp("expect_column_values_to_be_in_set", {"column": _d(tc, "increasing"), "value_set": [True]}, tc, "increasing",
                     "times must be strictly increasing within each patient (no repeated time)",
                     notes=f"Derived: rows sorted by ({idc}, {tc}); False where a patient's time does not exceed the previous one."))
    exps.append(_exp("expect_column_unique_value_count_to_be_between", {"column": idc, "min_value": schema.min_patients}, idc,
                     "min_patients", f"at least {schema.min_patients} patients"))
    for c in schema.columns:
        exps.extend(_column_expectations(c, idc))
    return {
        "name": schema.name,
        "expectations": exps,
        "meta": {
            "generated_from": "schema",
            "schema": schema.name,
            "id": idc,
            "time": tc,
            "max_length": schema.max_length,
            "note": (
                f"Derived columns are named '<column>{SEP}<check>'. Tighten by editing kwargs; add hand-written "
                f"expectations in '<schema>{EXTRA_SUFFIX}' beside the schema file."
            ),
        },
    }


def _column_expectations(c: Column, idc: str) -> list[dict]:
    out: list[dict] = []
    rate = c.allowed_missing
    if rate <= 0:
        out.append(_exp("expect_column_values_to_not_be_null", {"column": c.name}, c.name, "missing", "no missing values (not nullable)"))
    elif rate < 1:
        out.append(_exp("expect_column_values_to_not_be_null", {"column": c.name, "mostly": round(1.0 - rate, 10)}, c.name, "missing",
                        f"at most {rate:.0%} missing values"))
    if c.numeric:
        out.append(_exp("expect_column_values_to_be_in_set", {"column": _d(c.name, "is_number"), "value_set": [True]}, c.name, "is_number",
                        "values must be finite numbers (no text, no infinity)",
                        notes=f"Derived: True where `{c.name}` is missing or a finite number."))
        if c.type == "integer":
            out.append(_exp("expect_column_values_to_be_in_set", {"column": _d(c.name, "is_integer"), "value_set": [True]}, c.name,
                            "is_integer", "values must be whole numbers",
                            notes=f"Derived: True where `{c.name}` is missing, not a number, or a whole number."))
        if c.min is not None or c.max is not None:
            kw: dict[str, Any] = {"column": _d(c.name, "number")}
            if c.min is not None:
                kw["min_value"] = c.min
            if c.max is not None:
                kw["max_value"] = c.max
            bounds = (f"within [{_fmt(c.min)}, {_fmt(c.max)}]" if c.min is not None and c.max is not None
                      else f"at least {_fmt(c.min)}" if c.min is not None else f"at most {_fmt(c.max)}")
            out.append(_exp("expect_column_values_to_be_between", kw, c.name, "bounds", f"values must be {bounds}",
                            notes=f"Derived: `{c.name}` as a number (text and infinity left out: checked on their own)."))
    elif c.type == "categorical":
        out.append(_exp("expect_column_values_to_be_in_set", {"column": _d(c.name, "label"), "value_set": list(c.categories or ())},
                        c.name, "categories", f"values must be one of the declared categories {list(c.categories or ())}",
                        notes=f"Derived: `{c.name}` as canonical labels (1, 1.0 and \"1\" are all \"1\")."))
    elif c.type == "binary":
        out.append(_exp("expect_column_values_to_be_in_set", {"column": _d(c.name, "is_binary"), "value_set": [True]}, c.name, "binary",
                        "values must be 0/1 or true/false",
                        notes=f"Derived: True where `{c.name}` is missing or reads as 0/1/true/false."))
    if c.static:
        out.append(_exp("expect_column_values_to_be_in_set", {"column": _d(c.name, "static"), "value_set": [True]}, c.name, "static",
                        "a static column must keep one value per patient",
                        notes=f"Derived: False on every row of a patient whose `{c.name}` takes more than one value."))
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
        raise InputError(f"Hand-written expectations {path} are not valid JSON ({type(exc).__name__}: {getattr(exc, 'msg', exc)}).") from None
    if isinstance(raw, dict) and isinstance(raw.get("expectations"), list):
        raw = raw["expectations"]
    if not isinstance(raw, list):
        raise InputError(f"Hand-written expectations {path} must be a JSON list of expectations ({{\"type\": ..., \"kwargs\": {{...}}}}).")
    problems = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(e.get("kwargs", {}), dict):
            problems.append(f"entry {i + 1} is not of the form {{\"type\": \"expect_...\", \"kwargs\": {{...}}}}")
    if problems:
        raise InputError(f"Hand-written expectations {path}: " + "; ".join(problems) + ".")
    return [dict(e) for e in raw]


# ---- the frame GX sees ------------------------------------------------------------------------
def _labels(series: pd.Series) -> pd.Series:
    """Canonical labels (diffusion.schema.canonical_label), computed once per distinct value."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    lab = np.array([canonical_label(u) for u in uniques] + [None], dtype=object)
    return pd.Series(lab[codes], index=series.index, dtype=object)  # code -1 -> None


def _numbers(series: pd.Series) -> pd.Series:
    """Values as float64; missing, text and other unreadable values become NaN (inf stays inf)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)
    out = pd.to_numeric(series, errors="coerce")
    return pd.Series(out.to_numpy(dtype=float, na_value=np.nan), index=series.index)


def _binary(series: pd.Series) -> pd.Series:
    """0.0/1.0, NaN where missing or unreadable (as diffusion.schema.as_binary)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        v = pd.Series(series.to_numpy(dtype=float, na_value=np.nan), index=series.index)
        return v.where(v.isin([0.0, 1.0]), np.nan)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    vals = []
    for u in uniques:
        lab = canonical_label(u).lower()
        vals.append(1.0 if lab in TRUE_LABELS else 0.0 if lab in FALSE_LABELS else np.nan)
    arr = np.array(vals + [np.nan], dtype=float)
    return pd.Series(arr[codes], index=series.index)


def _changes_within_patient(values: np.ndarray, pid: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per row (original order): True when that row's patient takes more than one value."""
    codes, _ = pd.factorize(pd.Series(values), use_na_sentinel=True)  # missing is a value of its own (-1)
    c = codes[order]
    p = pid[order]
    same = np.empty(len(c), dtype=bool)
    same[0] = False
    same[1:] = p[1:] == p[:-1]
    changed = same & np.r_[False, c[1:] != c[:-1]]
    bad_patients = np.unique(p[changed])
    bad = np.isin(pid, bad_patients) & (pid >= 0)
    return bad


def _gx_frame(df: pd.DataFrame, schema: Schema, extra_columns: set[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The frame GX validates (see the module docstring) and aggregate facts about the extract."""
    cols: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    present = set(map(str, df.columns))
    idc, tc = schema.id, schema.time
    n = len(df)
    pid = None
    if idc in present:
        codes, _ = pd.factorize(df[idc], use_na_sentinel=True)
        pid = codes.astype(np.int64)
        cols[idc] = pd.Series(np.where(codes >= 0, codes, np.nan) if (codes < 0).any() else codes, index=df.index)
    tnum = None
    if tc in present:
        traw = df[tc]
        cols[tc] = traw
        tnum = _numbers(traw)
        finite = np.isfinite(tnum.to_numpy())
        cols[_d(tc, "is_number")] = pd.Series(finite | traw.isna().to_numpy(), index=df.index)
        tnum = tnum.where(finite, np.nan)
        cols[_d(tc, "number")] = tnum
    order = None
    if pid is not None and tnum is not None:
        t = tnum.to_numpy()
        order = np.lexsort((t, pid))
        ps, ts = pid[order], t[order]
        inc_sorted = np.ones(n, dtype=bool)
        if n > 1:
            same = (ps[1:] == ps[:-1]) & (ps[1:] >= 0)
            # NaN time / missing id rows are reported by their own expectations
            ok = ~(same & ~(ts[1:] > ts[:-1]) & ~np.isnan(ts[1:]) & ~np.isnan(ts[:-1]))
            inc_sorted[1:] = ok
        inc = np.empty(n, dtype=bool)
        inc[order] = inc_sorted
        cols[_d(tc, "increasing")] = pd.Series(inc, index=df.index)
    elif pid is not None:
        order = np.argsort(pid, kind="stable")
    if pid is not None:
        counts = np.bincount(pid[pid >= 0]) if (pid >= 0).any() else np.array([], dtype=int)
        facts["patients"] = int(len(counts))
        facts["longest"] = int(counts.max()) if len(counts) else 0
        facts["too_long"] = int((counts > schema.max_length).sum())
    for c in schema.columns:
        if c.name not in present:
            continue
        raw = df[c.name]
        cols[c.name] = raw
        missing = raw.isna().to_numpy()
        if c.numeric:
            num = _numbers(raw)
            v = num.to_numpy()
            finite = np.isfinite(v)
            cols[_d(c.name, "is_number")] = pd.Series(finite | missing, index=df.index)
            if c.type == "integer":
                whole = ~finite | (np.abs(v - np.round(v)) <= 1e-9 * np.maximum(1.0, np.abs(v)))
                cols[_d(c.name, "is_integer")] = pd.Series(whole | missing, index=df.index)
            num = num.where(finite, np.nan)
            if c.min is not None or c.max is not None:
                cols[_d(c.name, "number")] = num
            norm = num.to_numpy()
        elif c.type == "categorical":
            lab = _labels(raw)
            cols[_d(c.name, "label")] = lab
            norm = lab.to_numpy()
        else:
            b = _binary(raw)
            ok = b.notna().to_numpy() | missing
            cols[_d(c.name, "is_binary")] = pd.Series(ok, index=df.index)
            norm = b.to_numpy()
        if c.static:
            if pid is not None and order is not None and n:
                bad = _changes_within_patient(norm, pid, order)
            else:
                bad = np.zeros(n, dtype=bool)
            cols[_d(c.name, "static")] = pd.Series(~bad, index=df.index)
    for name in sorted(extra_columns):
        if name in present and name not in cols:
            cols[name] = df[name]
    frame = pd.DataFrame(cols)
    return frame, facts


# ---- validation -------------------------------------------------------------------------------
def _quiet_gx() -> None:
    """GX's own logging at ERROR only (it may describe batches); progress bars are off per context."""
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    # this one module sets its own logger to INFO when imported
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.ERROR)


def _referenced_columns(exp: dict) -> list[str]:
    kw = exp.get("kwargs", {}) or {}
    out = []
    for key in ("column", "column_A", "column_B"):
        if isinstance(kw.get(key), str):
            out.append(kw[key])
    if isinstance(kw.get("column_list"), list):
        out.extend(str(x) for x in kw["column_list"])
    return out


def _describe_extra(exp: dict) -> str:
    meta = exp.get("meta") or {}
    if isinstance(meta.get("description"), str):
        return meta["description"]
    kw = {k: v for k, v in (exp.get("kwargs") or {}).items() if k not in ("column", "column_list", "result_format", "catch_exceptions")}
    args = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in kw.items())
    return f"hand-written {exp['type']}({args})"


def validate_extract(
    df: pd.DataFrame,
    schema: Schema,
    *,
    docs_dir: str | Path | None = None,
    extra_expectations: list[dict] | None = None,
) -> ValidationReport:
    """Validate `df` against `schema` (plus hand-written expectations) with Great Expectations.

    Returns a ValidationReport; call `.raise_for_failures()` to turn a failure into an
    ExtractValidationError. With `docs_dir`, GX Data Docs are written there (index.html).
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"validate_extract needs a pandas DataFrame, got {type(df).__name__}.")
    if not all(isinstance(c, str) for c in df.columns):
        df = df.rename(columns=str)
    if not df.index.equals(pd.RangeIndex(len(df))):
        df = df.reset_index(drop=True)  # derived columns are aligned by position
    suite_json = build_suite(schema)
    schema_exps = suite_json["expectations"]
    extras = []
    for e in extra_expectations or []:
        e = copy.deepcopy(e)
        kw = dict(e.get("kwargs") or {})
        kw.pop("result_format", None)
        e["kwargs"] = kw
        meta = dict(e.get("meta") or {})
        meta.setdefault("source", "hand-written")
        e["meta"] = meta
        extras.append(e)

    present = set(map(str, df.columns))
    known = {schema.id, schema.time, *schema.column_names}
    extra_cols = {c for e in extras for c in _referenced_columns(e)} - known
    ignored = sorted(present - known - extra_cols)
    report_warnings: list[str] = []
    if ignored:
        shown = ", ".join(repr(c) for c in ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
        report_warnings.append(f"{len(ignored)} column(s) of the extract are not in schema '{schema.name}' and are ignored: {shown}.")

    frame, facts = _gx_frame(df, schema, extra_cols)
    if facts.get("too_long"):
        report_warnings.append(
            f"{facts['too_long']} patient(s) have more than max_length={schema.max_length} visits "
            f"(longest: {facts['longest']}); their trajectories will be cut to the first {schema.max_length}."
        )

    # Expectations on a column that is absent: the column's own expect_column_to_exist reports it.
    pre_failures: list[Failure] = []
    to_run: list[dict] = []
    for e in schema_exps + extras:
        refs = _referenced_columns(e)
        absent = [c for c in refs if c not in frame.columns]
        if e["type"] == "expect_column_to_exist" or not absent:
            to_run.append(e)
        elif e in extras and any(c not in known for c in absent):
            pre_failures.append(Failure(", ".join(absent), e["type"], f"{_describe_extra(e)}: the column is not in the extract", None))

    results = _run_gx(frame, schema, to_run, docs_dir)

    failures: list[Failure] = []
    passed = 0
    for exp, res in zip(to_run, results):
        if res["success"]:
            passed += 1
            continue
        meta = exp.get("meta") or {}
        column = meta.get("column") or ", ".join(_referenced_columns(exp)) or "table"
        desc = meta.get("description") if meta.get("source") != "hand-written" else _describe_extra(exp)
        desc = desc or _describe_extra(exp)
        count = res.get("unexpected_count")
        if res.get("exception"):
            desc += f" (could not be evaluated: {res['exception']})"
        elif exp["type"] in _COUNT_OBSERVED and isinstance(res.get("observed_value"), (int, np.integer)):
            desc += f", found {int(res['observed_value'])}"
        failures.append(Failure(str(column), exp["type"], desc, None if count is None else int(count)))
    failures.extend(pre_failures)

    n = len(df)
    missing_rates = {}
    for col in [schema.id, schema.time, *schema.column_names]:
        if col in present:
            missing_rates[col] = round(float(df[col].isna().mean()), 6) if n else 0.0
    profile = {
        "rows": n,
        "patients": facts.get("patients"),
        "columns": len(df.columns),
        "schema_columns_present": sum(1 for c in known if c in present),
        "ignored_columns": len(ignored),
        "longest_patient": facts.get("longest"),
        "patients_over_max_length": facts.get("too_long", 0),
        "missing_rates": missing_rates,
    }
    evaluated = len(to_run) + len(pre_failures)
    summary = {
        "suite": schema.name,
        "evaluated": evaluated,
        "passed": passed,
        "failed": evaluated - passed,
        "success_percent": round(100.0 * passed / evaluated, 2) if evaluated else 100.0,
        "rows": n,
        "patients": facts.get("patients"),
        "warnings": len(report_warnings),
    }
    docs_path = None
    if docs_dir is not None:
        index = Path(docs_dir) / "index.html"
        docs_path = index if index.exists() else None
    report = ValidationReport(
        success=not failures,
        failures=failures,
        warnings=report_warnings,
        summary=summary,
        profile=profile,
        docs_path=docs_path,
        suite_name=schema.name,
    )
    for w in report_warnings:
        log.warning(w)
    return report


def _run_gx(frame: pd.DataFrame, schema: Schema, expectations: list[dict], docs_dir: str | Path | None) -> list[dict]:
    """Run the expectations on the frame with GX; per expectation: success, unexpected_count, exception."""
    _quiet_gx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_gx_quietly(frame, schema, expectations, docs_dir)


def _run_gx_quietly(frame: pd.DataFrame, schema: Schema, expectations: list[dict], docs_dir: str | Path | None) -> list[dict]:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    _quiet_gx()
    gx_exps = []
    for e in expectations:
        try:
            cfg = ExpectationConfiguration(
                type=e["type"], kwargs=dict(e.get("kwargs") or {}), meta=e.get("meta"),
                notes=e.get("notes"), description=e.get("description"),
            )
            gx_exps.append(cfg.to_domain_obj())
        except Exception as exc:  # unknown type, bad kwargs: only hand-written ones can get here
            raise InputError(
                f"Expectation {e.get('type')!r} on {', '.join(_referenced_columns(e)) or 'the table'} is not a valid "
                f"Great Expectations {gx.__version__} expectation ({type(exc).__name__})."
            ) from None

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(name="extract")
    asset = source.add_dataframe_asset(name=schema.name)
    batch_def = asset.add_batch_definition_whole_dataframe("whole extract")
    suite = context.suites.add(gx.ExpectationSuite(name=schema.name, expectations=gx_exps))
    vdef = context.validation_definitions.add(gx.ValidationDefinition(name=f"{schema.name} extract", data=batch_def, suite=suite))
    actions = []
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name=f"{schema.name} checkpoint", validation_definitions=[vdef], actions=actions, result_format=RESULT_FORMAT)
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    (vres,) = list(run.run_results.values())
    by_id = {r.expectation_config.id: r for r in vres.results}
    out = []
    for exp_obj in suite.expectations:
        r = by_id.get(exp_obj.id)
        if r is None:
            out.append({"success": False, "exception": "not evaluated"})
            continue
        info = r.exception_info or {}
        raised = bool(info.get("raised_exception")) if isinstance(info, dict) and "raised_exception" in info else any(
            isinstance(v, dict) and v.get("raised_exception") for v in (info.values() if isinstance(info, dict) else [])
        )
        result = r.result or {}
        out.append({
            "success": bool(r.success),
            "unexpected_count": result.get("unexpected_count"),
            "observed_value": result.get("observed_value"),
            "exception": _exception_kind(info) if raised else None,
        })
    return out


def _exception_kind(info: dict) -> str:
    """The exception's class name only: GX exception messages may quote values."""
    msgs = []
    for v in [info, *[x for x in info.values() if isinstance(x, dict)]]:
        m = v.get("exception_message") if isinstance(v, dict) else None
        if m:
            msgs.append(str(m))
    text = msgs[0] if msgs else ""
    if "not found" in text.lower() or "does not exist" in text.lower() or "KeyError" in text:
        return "a column it names is not in the extract"
    return "the check raised an error"
