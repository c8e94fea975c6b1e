"""expectations.validate: GX validation derived from the schema.

Every broken extract must fail with an InputError subclass whose one-paragraph message names the
column and the kind of problem, and never quotes a raw value or a patient id (the patient ids
below are "PAT-xxxxx" and the injected bad values are distinctive numbers and strings, so a leak
would be caught by a plain substring check, in messages, reports and the Data Docs alike).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from diffusion.data.schema import Schema, SchemaError
from diffusion.errors import InputError
from expectations import (
    ExtractValidationError,
    ValidationReport,
    build_suite,
    load_extra_expectations,
    read_extract,
    save_suite,
    validate_extract,
)
from expectations.suite import SUITES_DIR

ROOT = Path(__file__).resolve().parents[1]
PBC_YAML = ROOT / "flows" / "data" / "pbc.yaml"
PBC_CSV = ROOT / "flows" / "data" / "pbcseq.csv"
# Distinctive raw values injected into broken extracts: none may appear in any output.
BAD_NUMBER = 987654.25
BAD_TEXT = "zzqx-not-a-number"
BAD_CATEGORY = "qqcat"
FORBIDDEN = ("PAT-", "987654", BAD_TEXT, BAD_CATEGORY)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.load(PBC_YAML)


@pytest.fixture(scope="module")
def pbc() -> pd.DataFrame:
    """The demo cohort with ids turned into recognisable strings, rows shuffled."""
    df = read_extract(PBC_CSV)
    df["id"] = df["id"].map(lambda i: f"PAT-{i:05d}")
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def small(pbc: pd.DataFrame) -> pd.DataFrame:
    """60 patients (min_patients is 50): enough for every check, quick to validate."""
    keep = sorted(pbc["id"].unique())[:60]
    return pbc[pbc["id"].isin(keep)].reset_index(drop=True)


def _no_leak(text: str) -> None:
    for token in FORBIDDEN:
        assert token not in text, f"raw value or patient id {token!r} leaked"


def _fails(df: pd.DataFrame, schema: Schema, *words: str, **kw) -> str:
    report = validate_extract(df, schema, **kw)
    assert not report.success
    with pytest.raises(ExtractValidationError) as info:
        report.raise_for_failures()
    err = info.value
    assert isinstance(err, InputError) and err.report is report
    msg = str(err)
    assert "\n" not in msg, "one paragraph"
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"
    _no_leak(msg)
    _no_leak(json.dumps(report.to_dict()))
    _no_leak(" ".join(report.warnings))
    return msg


def _first_rows_of(df: pd.DataFrame, n_patients: int) -> pd.Index:
    ids = sorted(df["id"].unique())[:n_patients]
    return df.index[df["id"].isin(ids)]


# ---- valid extracts ---------------------------------------------------------------------------
def test_pbc_in_random_order_passes(pbc: pd.DataFrame, schema: Schema) -> None:
    report = validate_extract(pbc, schema)
    assert report.success, report.message()
    assert report.failures == [] and report.warnings == []
    report.raise_for_failures()  # no error
    s = report.summary
    assert s["evaluated"] == s["passed"] > 50 and s["failed"] == 0
    assert s["rows"] == len(pbc) and s["patients"] == pbc["id"].nunique() == 312
    p = report.profile
    assert p["rows"] == len(pbc) and p["patients"] == 312
    assert p["missing_rates"]["chol"] == pytest.approx(pbc["chol"].isna().mean(), abs=1e-6)
    assert p["missing_rates"]["age"] == 0.0
    out = report.to_dict()
    json.dumps(out)
    _no_leak(json.dumps(out))
    assert "passed" in report.message()


def test_pbc_from_parquet_with_categorical_and_nullable_dtypes_passes(
    tmp_path: Path, small: pd.DataFrame, schema: Schema
) -> None:
    df = small.copy()
    df["sex"] = df["sex"].astype("category")
    df["stage"] = df["stage"].astype(str)  # "1".."4" as text: labels still match
    df["edema"] = df["edema"].astype(object)  # 0.0 / 0.5 / 1.0 match "0" / "0.5" / "1"
    df["platelet"] = df["platelet"].astype("Int64")
    df["ascites"] = df["ascites"].map({1.0: "true", 0.0: "false"})  # true/false is binary too
    df.to_parquet(tmp_path / "x.parquet")
    report = validate_extract(read_extract(tmp_path / "x.parquet"), schema)
    assert report.success, report.message()


def test_hundreds_of_extra_columns_pass_with_a_warning(pbc: pd.DataFrame, schema: Schema) -> None:
    extra = pd.DataFrame(np.random.default_rng(0).normal(size=(len(pbc), 400)), columns=[f"x{i}" for i in range(400)])
    extra["free_text"] = BAD_TEXT
    df = pd.concat([pbc, extra], axis=1)
    report = validate_extract(df, schema)
    assert report.success, report.message()
    assert len(report.warnings) == 1 and "401 column(s)" in report.warnings[0] and "ignored" in report.warnings[0]
    assert report.profile["ignored_columns"] == 401
    _no_leak(json.dumps(report.to_dict()))


def test_patients_longer_than_max_length_warn_not_fail(small: pd.DataFrame, schema: Schema) -> None:
    short = Schema.from_dict({**schema.to_dict(), "max_length": 5})
    report = validate_extract(small, short)
    assert report.success, report.message()
    assert any("max_length=5" in w and "cut" in w for w in report.warnings)
    assert report.profile["patients_over_max_length"] > 0


# ---- broken extracts (each must name the column and the problem) --------------------------------
def _set(df: pd.DataFrame, rows, column: str, value) -> pd.DataFrame:
    df = df.copy()
    if isinstance(value, str) and df[column].dtype != object:
        df[column] = df[column].astype(object)
    df.loc[rows, column] = value
    return df


def test_strings_in_numeric_column(small, schema) -> None:
    df = _set(small, small.index[:3], "bili", BAD_TEXT)
    _fails(df, schema, "'bili'", "finite numbers", "3 rows")


def test_infinity(small, schema) -> None:
    df = _set(small, small.index[:2], "albumin", np.inf)
    _fails(df, schema, "'albumin'", "finite numbers", "2 rows")


def test_negative_age(small, schema) -> None:
    df = _set(small, _first_rows_of(small, 1), "age", -BAD_NUMBER)
    _fails(df, schema, "'age'", "within [0, 120]")


def test_value_above_max(small, schema) -> None:
    rows = _first_rows_of(small, 2)
    df = _set(small, rows, "age", BAD_NUMBER)
    _fails(df, schema, "'age'", "within [0, 120]", f"{len(rows)} rows")


def test_unknown_category(small, schema) -> None:
    df = _set(small, small.index[:4], "stage", BAD_CATEGORY)
    msg = _fails(df, schema, "'stage'", "declared categories", "4 rows")
    assert "['1', '2', '3', '4']" in msg


def test_new_category_code(small, schema) -> None:
    df = _set(small, small.index[:1], "edema", 0.75)
    _fails(df, schema, "'edema'", "declared categories", "1 row fails")


def test_duplicated_visits(small, schema) -> None:
    df = pd.concat([small, small.iloc[:5]], ignore_index=True)
    _fails(df, schema, "'id', 'day'", "duplicated visits", "10 rows", "strictly increasing")


def test_static_column_that_changes(small, schema) -> None:
    rows = _first_rows_of(small, 1)
    df = _set(small, rows[:1], "sex", "m" if small.loc[rows[0], "sex"] == "f" else "f")
    _fails(df, schema, "'sex'", "static", f"{len(rows)} rows")


def test_null_id(small, schema) -> None:
    df = _set(small, small.index[:2], "id", None)
    _fails(df, schema, "'id'", "patient id must never be missing", "2 rows")


def test_null_time(small, schema) -> None:
    df = _set(small, small.index[:3], "day", np.nan)
    _fails(df, schema, "'day'", "time must never be missing", "3 rows")


def test_time_not_numeric(small, schema) -> None:
    df = _set(small, small.index[:1], "day", BAD_TEXT)
    _fails(df, schema, "'day'", "finite numbers")


def test_missing_required_column(small, schema) -> None:
    msg = _fails(small.drop(columns=["albumin"]), schema, "'albumin'", "missing from the extract")
    assert msg.count("'albumin'") == 1, "only the missing column is reported, not its other checks"


def test_missing_id_and_time_columns(small, schema) -> None:
    _fails(small.drop(columns=["id", "day"]), schema, "'id'", "'day'", "missing from the extract")


def test_too_many_missing_in_nullable_column(small, schema) -> None:
    df = _set(small, small.index[: len(small) // 2], "ascites", np.nan)
    _fails(df, schema, "'ascites'", "at most 20% missing")


def test_missing_in_non_nullable_column(small, schema) -> None:
    df = _set(small, small.index[:3], "protime", np.nan)
    _fails(df, schema, "'protime'", "no missing values", "3 rows")


def test_binary_with_value_2(small, schema) -> None:
    df = _set(small, small.index[:2], "hepato", 2.0)
    _fails(df, schema, "'hepato'", "0/1 or true/false", "2 rows")


def test_integer_column_with_fractions(small, schema) -> None:
    df = _set(small, small.index[:1], "platelet", 150.5)
    _fails(df, schema, "'platelet'", "whole numbers", "1 row")


def test_too_few_patients(small, schema) -> None:
    df = small.loc[_first_rows_of(small, 7)]
    _fails(df, schema, "'id'", "at least 50 patients", "found 7")


def test_several_problems_in_one_paragraph(small, schema) -> None:
    df = _set(small, small.index[:1], "stage", BAD_CATEGORY)
    df = _set(df, df.index[:1], "bili", -BAD_NUMBER).drop(columns=["ast"])
    msg = _fails(df, schema, "3 of", "'stage'", "'bili'", "'ast'")
    assert msg.startswith("Extract failed validation against suite 'pbc'")


# ---- broken schemas (diffusion/data/schema.py checks them before any extract is read) ----------------
def _schema_error(tmp_path: Path, raw: dict, *words: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SchemaError) as info:
        Schema.load(p)
    assert isinstance(info.value, InputError)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"


BASE = {"name": "t", "id": "id", "time": "day", "columns": {"age": {"type": "real", "min": 0, "max": 120}}}


def test_schema_unknown_type(tmp_path) -> None:
    _schema_error(tmp_path, {**BASE, "columns": {"age": {"type": "float"}}}, "'age'", "'float'", "type")


def test_schema_missing_id(tmp_path) -> None:
    _schema_error(tmp_path, {k: v for k, v in BASE.items() if k != "id"}, "'id'", "patient identifier")


def test_schema_missing_time(tmp_path) -> None:
    _schema_error(tmp_path, {k: v for k, v in BASE.items() if k != "time"}, "'time'")


def test_schema_empty_category_list(tmp_path) -> None:
    _schema_error(tmp_path, {**BASE, "columns": {"sex": {"type": "categorical", "categories": []}}}, "'sex'", "categories")


def test_schema_min_greater_than_max(tmp_path) -> None:
    _schema_error(
        tmp_path, {**BASE, "columns": {"age": {"type": "real", "min": 10, "max": 1}}}, "'age'", "min (10) is greater than max (1)"
    )


def test_schema_file_missing(tmp_path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        Schema.load(tmp_path / "nope.yaml")


# ---- suite, hand-written expectations, Data Docs ------------------------------------------------
def test_suite_is_gx_json_and_committed_pbc_suite_is_current(schema: Schema, tmp_path: Path) -> None:
    suite = build_suite(schema)
    assert suite["name"] == "pbc"
    assert all(set(e) >= {"type", "kwargs", "meta"} and e["type"].startswith("expect_") for e in suite["expectations"])
    types = {e["type"] for e in suite["expectations"]}
    assert {
        "expect_column_to_exist",
        "expect_column_values_to_not_be_null",
        "expect_compound_columns_to_be_unique",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
        "expect_column_unique_value_count_to_be_between",
    } <= types
    checks = {(e["meta"]["column"], e["meta"]["check"]) for e in suite["expectations"]}
    assert {("sex", "static"), ("day", "increasing"), ("bili", "is_number"), ("chol", "missing")} <= checks
    path = save_suite(schema, tmp_path / "pbc.json")
    assert json.loads(path.read_text()) == suite
    committed = SUITES_DIR / "pbc.json"
    assert json.loads(committed.read_text()) == suite, "regenerate with expectations.validate.save_suite(schema)"
    # GX itself accepts every expectation of the suite
    import great_expectations as gx

    assert len(gx.ExpectationSuite(name="pbc", expectations=suite["expectations"]).expectations) == len(suite["expectations"])


def test_extra_expectations_beside_the_schema(tmp_path: Path, small: pd.DataFrame, schema: Schema) -> None:
    schema_path = tmp_path / "pbc.yaml"
    schema_path.write_text(PBC_YAML.read_text())
    assert load_extra_expectations(schema_path) == []
    extra = [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "albumin", "min_value": 1, "max_value": 6},
            "meta": {"description": "albumin within 1-6 g/dL (a unit change would break this)"},
        },
        {
            "type": "expect_column_mean_to_be_between",
            "kwargs": {"column": "bili", "min_value": 0, "max_value": 50, "result_format": "COMPLETE"},
        },
    ]
    (tmp_path / "pbc.expectations.json").write_text(json.dumps(extra))
    loaded = load_extra_expectations(schema_path)
    assert [e["type"] for e in loaded] == [e["type"] for e in extra]
    assert validate_extract(small, schema, extra_expectations=loaded).success
    df = small.copy()
    df["albumin"] = df["albumin"] * 10  # g/dL -> g/L: a silent unit change
    msg = _fails(df, schema, "'albumin'", "unit change", extra_expectations=loaded)
    assert "'bili'" not in msg


def test_extra_expectations_errors(tmp_path: Path, small: pd.DataFrame, schema: Schema) -> None:
    schema_path = tmp_path / "pbc.yaml"
    (tmp_path / "pbc.expectations.json").write_text("[{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_extra_expectations(schema_path)
    (tmp_path / "pbc.expectations.json").write_text(json.dumps([{"kwargs": {}}]))
    with pytest.raises(InputError, match="entry 1"):
        load_extra_expectations(schema_path)
    with pytest.raises(InputError, match="expect_no_such_thing"):
        validate_extract(small, schema, extra_expectations=[{"type": "expect_no_such_thing", "kwargs": {"column": "age"}}])
    report = validate_extract(
        small, schema, extra_expectations=[{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "not_there"}}]
    )
    assert not report.success and "not_there" in report.message() and "not in the extract" in report.message()
    report = validate_extract(
        small,
        schema,
        extra_expectations=[
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "sex", "min_value": 0}},  # text vs number
            {"type": "expect_column_max_to_be_between", "kwargs": {"column": "age", "max_value": 50}},
        ],
    )
    msg = report.message()
    assert "'sex'" in msg and "could not be evaluated" in msg
    assert "'age'" in msg and "max_value=50" in msg
    assert f"{small['age'].max()}" not in msg and f"{small['age'].max():g}" not in msg, "observed max is a raw value"


def test_data_docs_written_without_raw_values(tmp_path: Path, small: pd.DataFrame, schema: Schema) -> None:
    df = _set(small, small.index[:3], "stage", BAD_CATEGORY)
    df = _set(df, df.index[:2], "bili", BAD_TEXT)
    df = _set(df, df.index[3:5], "age", BAD_NUMBER)
    docs = tmp_path / "docs"
    report = validate_extract(df, schema, docs_dir=docs)
    assert not report.success
    assert report.docs_path == docs / "index.html" and report.docs_path.exists()
    assert str(report.docs_path) in report.message()
    pages = [p for p in docs.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".js")]
    assert any("validations" in str(p) for p in pages)
    text = "".join(p.read_text(errors="replace") for p in pages)
    assert "stage::label" in text and "sex::static" in text, "derived checks appear in the docs"
    _no_leak(text)


def test_no_raw_values_in_logs(caplog: pytest.LogCaptureFixture, small: pd.DataFrame, schema: Schema, capsys) -> None:
    df = _set(small, small.index[:3], "stage", BAD_CATEGORY)
    df = _set(df, df.index[:2], "bili", BAD_TEXT).assign(extra_col=1)
    with caplog.at_level(logging.DEBUG):
        report = validate_extract(df, schema)
    assert not report.success
    captured = capsys.readouterr()
    _no_leak(caplog.text + captured.out + captured.err)
    assert "extra_col" in caplog.text  # the ignored-column warning is logged


def test_report_api(small: pd.DataFrame, schema: Schema) -> None:
    report = validate_extract(small, schema)
    assert isinstance(report, ValidationReport) and report.success and report.docs_path is None
    assert set(report.to_dict()) >= {"success", "failures", "warnings", "summary", "profile", "docs_path"}
    with pytest.raises(InputError, match="DataFrame"):
        validate_extract("not a frame", schema)  # type: ignore[arg-type]


# ---- the command line ----
def _cli():
    from flows.cli import main  # an import error fails the test

    return main


def test_cli_validate_exit_codes(tmp_path: Path, small: pd.DataFrame, capsys) -> None:
    main = _cli()
    good = tmp_path / "good.csv"
    small.to_csv(good, index=False)
    assert main(["validate", str(good), "--schema", str(PBC_YAML)]) == 0
    bad = tmp_path / "bad.csv"
    _set(small, small.index[:2], "stage", BAD_CATEGORY).to_csv(bad, index=False)
    capsys.readouterr()
    assert main(["validate", str(bad), "--schema", str(PBC_YAML)]) == 2
    err = capsys.readouterr().err
    assert "'stage'" in err and "Traceback" not in err
    _no_leak(err)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["validate", str(empty), "--schema", str(PBC_YAML)]) == 2
    assert "empty" in capsys.readouterr().err
