"""Validating an extract against its schema with Great Expectations.

`validate_extract` runs the schema's suite (`expectations.suite`, plus hand-written
expectations) on the frame GX sees (`expectations.frame`: patient ids replaced by anonymous
codes, derived ``<column>::<check>`` columns) and returns a `ValidationReport`: every failure
with its column, the check, a plain-language description and a row count. Results are requested
with ``partial_unexpected_count: 0`` and no unexpected rows, so GX keeps only counts, and
messages are built from column names, the expectation and counts: no value of the extract
reaches a message, a log line or the Data Docs.
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

from diffusion.data.schema import Schema
from diffusion.errors import InputError
from expectations.frame import gx_frame
from expectations.suite import build_suite

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

log = logging.getLogger(__name__)

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
    kw = {
        k: v
        for k, v in (exp.get("kwargs") or {}).items()
        if k not in ("column", "column_list", "result_format", "catch_exceptions")
    }
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
    df = _as_frame(df)
    extras = _hand_written(extra_expectations)
    present = set(map(str, df.columns))
    known = {schema.id, schema.time, *schema.column_names}
    extra_cols = {c for e in extras for c in _referenced_columns(e)} - known
    ignored = sorted(present - known - extra_cols)
    report_warnings: list[str] = []
    if ignored:
        shown = ", ".join(repr(c) for c in ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
        report_warnings.append(
            f"{len(ignored)} column(s) of the extract are not in schema '{schema.name}' and are ignored: {shown}."
        )
    frame, facts = gx_frame(df, schema, extra_cols)
    if facts.get("too_long"):
        report_warnings.append(
            f"{facts['too_long']} patient(s) have more than max_length={schema.max_length} visits; "
            f"their trajectories will be cut to the first {schema.max_length}."
        )
    to_run, pre_failures = _runnable(build_suite(schema)["expectations"], extras, frame, known)
    failures, passed = _failures(to_run, _run_gx(frame, schema, to_run, docs_dir))
    failures.extend(pre_failures)
    evaluated = len(to_run) + len(pre_failures)
    summary = {
        "suite": schema.name,
        "evaluated": evaluated,
        "passed": passed,
        "failed": evaluated - passed,
        "success_percent": round(100.0 * passed / evaluated, 2) if evaluated else 100.0,
        "rows": len(df),
        "patients": facts.get("patients"),
        "warnings": len(report_warnings),
    }
    index = Path(docs_dir) / "index.html" if docs_dir is not None else None
    report = ValidationReport(
        success=not failures,
        failures=failures,
        warnings=report_warnings,
        summary=summary,
        profile=_profile(df, schema, facts, known, len(ignored)),
        docs_path=index if index is not None and index.exists() else None,
        suite_name=schema.name,
    )
    for w in report_warnings:
        log.warning(w)
    return report


def _as_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with string column names and a positional index (derived columns are aligned by position)."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"validate_extract needs a pandas DataFrame, got {type(df).__name__}.")
    if not all(isinstance(c, str) for c in df.columns):
        df = df.rename(columns=str)
    if not df.index.equals(pd.RangeIndex(len(df))):
        df = df.reset_index(drop=True)
    return df


def _hand_written(extra_expectations: list[dict] | None) -> list[dict]:
    """Copies of the hand-written expectations, marked so, without a result_format of their own."""
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
    return extras


def _runnable(
    schema_exps: list[dict], extras: list[dict], frame: pd.DataFrame, known: set[str]
) -> tuple[list[dict], list[Failure]]:
    """(expectations to run, failures found before running): an expectation on an absent column is
    left to that column's own expect_column_to_exist, or fails at once if hand-written on an unknown one."""
    to_run: list[dict] = []
    pre_failures: list[Failure] = []
    for e in schema_exps + extras:
        absent = [c for c in _referenced_columns(e) if c not in frame.columns]
        if e["type"] == "expect_column_to_exist" or not absent:
            to_run.append(e)
        elif e in extras and any(c not in known for c in absent):
            pre_failures.append(
                Failure(", ".join(absent), e["type"], f"{_describe_extra(e)}: the column is not in the extract", None)
            )
    return to_run, pre_failures


def _failures(to_run: list[dict], results: list[dict]) -> tuple[list[Failure], int]:
    """(the failed expectations described for a person, how many passed)."""
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
    return failures, passed


def _profile(df: pd.DataFrame, schema: Schema, facts: dict, known: set[str], ignored: int) -> dict:
    """Aggregates of the extract (counts and missing rates per column): no patient's value."""
    present = set(map(str, df.columns))
    n = len(df)
    missing_rates = {}
    for col in [schema.id, schema.time, *schema.column_names]:
        if col in present:
            missing_rates[col] = round(float(df[col].isna().mean()), 6) if n else 0.0
    return {
        "rows": n,
        "patients": facts.get("patients"),
        "columns": len(df.columns),
        "schema_columns_present": sum(1 for c in known if c in present),
        "ignored_columns": ignored,
        "patients_over_max_length": facts.get("too_long", 0),
        "missing_rates": missing_rates,
    }


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

    _quiet_gx()
    gx_exps = [_gx_expectation(e) for e in expectations]
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
        gx.Checkpoint(
            name=f"{schema.name} checkpoint", validation_definitions=[vdef], actions=actions, result_format=RESULT_FORMAT
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    (vres,) = list(run.run_results.values())
    by_id = {r.expectation_config.id: r for r in vres.results}
    return [_outcome(by_id.get(exp_obj.id)) for exp_obj in suite.expectations]


def _gx_expectation(e: dict):
    """The GX expectation object of one expectation dict; InputError for one GX cannot build."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    try:
        cfg = ExpectationConfiguration(
            type=e["type"],
            kwargs=dict(e.get("kwargs") or {}),
            meta=e.get("meta"),
            notes=e.get("notes"),
            description=e.get("description"),
        )
        return cfg.to_domain_obj()
    except Exception as exc:  # unknown type, bad kwargs: only hand-written ones can get here
        raise InputError(
            f"Expectation {e.get('type')!r} on {', '.join(_referenced_columns(e)) or 'the table'} is not a valid "
            f"Great Expectations {gx.__version__} expectation ({type(exc).__name__})."
        ) from None


def _outcome(r) -> dict:
    """One GX result as {success, unexpected_count, observed_value, exception kind or None}."""
    if r is None:
        return {"success": False, "exception": "not evaluated"}
    info = r.exception_info or {}
    raised = (
        bool(info.get("raised_exception"))
        if isinstance(info, dict) and "raised_exception" in info
        else any(isinstance(v, dict) and v.get("raised_exception") for v in (info.values() if isinstance(info, dict) else []))
    )
    result = r.result or {}
    return {
        "success": bool(r.success),
        "unexpected_count": result.get("unexpected_count"),
        "observed_value": result.get("observed_value"),
        "exception": _exception_kind(info) if raised else None,
    }


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
