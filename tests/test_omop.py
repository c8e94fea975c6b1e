"""OMOP CDM in and out (expectations/omop/): the mapping file's checks, a small hand-built CDM
database read into the long extract (aggregation per visit, events outside visits, static
fields, condition flags, units and unmapped concepts reported), the bundled PBC cohort and a
second public cohort through OMOP and back unchanged, synthetic frames with fresh ids only, and
writing in one transaction (a failure midway leaves no table). SQLite and PostgreSQL."""

import sqlite3
import sys
from datetime import date

import numpy as np
import pandas as pd
import pytest
from databases import pg_database, pg_execute, pg_url
from test_pipeline import DEMO_DATA, ROOT

from diffusion.errors import InputError
from expectations.omop.convert import to_omop
from expectations.omop.extract import omop_extract
from expectations.omop.load import load_extract
from expectations.omop.mapping import MappingError, load_mapping, parse_mapping
from expectations.omop.tables import write_tables
from expectations.sql import SourceError

PBC_MAPPING = ROOT / "flows" / "data" / "pbc_omop_mapping.yaml"

SMALL = {
    "name": "small",
    "id": "pid",
    "time": "day",
    "person": {"age": {"field": "age"}, "sex": {"field": "gender", "labels": {8532: "f", 8507: "m"}}},
    "columns": {
        "bili": {"table": "measurement", "concept_id": 3024128, "unit": "mg/dL"},
        "stage": {"table": "observation", "concept_id": 2000000015, "labels": {2000000021: "1", 2000000022: "2"}},
    },
    "conditions": {"cirrhosis": {"concept_ids": [4064161]}},
}


def small_cdm() -> dict[str, pd.DataFrame]:
    """Two persons, three visits, two units for one lab, an event outside every visit, unmapped concepts."""
    d = pd.Timestamp
    measurement = pd.DataFrame(
        {
            "measurement_id": range(1, 9),
            "person_id": [11, 11, 11, 11, 12, 12, 12, 12],
            "measurement_concept_id": [3024128] * 5 + [3004249] * 3,
            "measurement_date": [d(x).date() for x in ["2020-01-01", "2020-01-02", "2020-01-11", "2020-02-01", "2021-05-05"] * 1]
            + [d("2021-05-05").date()] * 3,
            "measurement_type_concept_id": 32817,
            "value_as_number": [1.0, 3.0, 5.0, 7.0, 2.0, 120.0, 130.0, 125.0],
            "value_as_concept_id": None,
            "unit_concept_id": None,
            "unit_source_value": ["mg/dL", "umol/L", "mg/dL", "mg/dL", "mg/dL", "mmHg", "mmHg", "mmHg"],
            "visit_occurrence_id": [1, 1, 2, None, 3, 3, 3, 3],
        }
    )
    return {
        "person": pd.DataFrame(
            {
                "person_id": [11, 12],
                "gender_concept_id": [8532, 8507],
                "year_of_birth": [1950, 1960],
                "month_of_birth": [3, None],
                "day_of_birth": [None, None],
                "birth_datetime": [None, None],
                "race_concept_id": 0,
                "ethnicity_concept_id": 0,
            }
        ),
        "visit_occurrence": pd.DataFrame(
            {
                "visit_occurrence_id": [1, 2, 3],
                "person_id": [11, 11, 12],
                "visit_concept_id": 9202,
                "visit_start_date": [d(x).date() for x in ["2020-01-01", "2020-01-11", "2021-05-05"]],
                "visit_end_date": [d(x).date() for x in ["2020-01-01", "2020-01-11", "2021-05-05"]],
                "visit_type_concept_id": 32817,
            }
        ),
        "measurement": measurement,
        "observation": pd.DataFrame(
            {
                "observation_id": [1, 2],
                "person_id": [11, 12],
                "observation_concept_id": 2000000015,
                "observation_date": [d("2020-01-01").date(), d("2021-05-05").date()],
                "observation_type_concept_id": 32817,
                "value_as_number": None,
                "value_as_concept_id": [2000000021, 2000000022],
                "visit_occurrence_id": [1, 3],
            }
        ),
        "condition_occurrence": pd.DataFrame(
            {
                "condition_occurrence_id": [1, 2],
                "person_id": [12, 11],
                "condition_concept_id": [4064161, 201826],
                "condition_start_date": [d("2021-05-05").date()] * 2,
                "condition_type_concept_id": 32817,
            }
        ),
    }


def test_a_small_cdm_becomes_the_long_extract_with_units_and_unmapped_concepts_reported(tmp_path):
    url = f"sqlite:///{tmp_path / 'cdm.db'}"
    sqlite3.connect(tmp_path / "cdm.db").close()
    write_tables(url, None, small_cdm())
    df, report = omop_extract(url, None, parse_mapping(SMALL))
    assert list(df.columns) == ["pid", "day", "age", "sex", "bili", "stage", "cirrhosis"]
    assert df["pid"].tolist() == [11, 11, 11, 12] and df["day"].tolist() == [0, 10, 31, 0]
    assert df["bili"].tolist() == [2.0, 5.0, 7.0, 2.0]  # visit 1's two values averaged; the event outside visits its own row
    assert df["stage"].iloc[[0, 3]].tolist() == ["1", "2"] and df["stage"].iloc[1:3].isna().all()
    assert df["sex"].tolist() == ["f", "f", "f", "m"] and df["cirrhosis"].tolist() == [0, 0, 0, 1]
    born_11, born_12 = pd.Timestamp("1950-03-15"), pd.Timestamp("1960-07-01")  # missing day: the 15th; missing month: July 1
    assert df["age"].iloc[0] == round((pd.Timestamp("2020-01-01") - born_11).days / 365.25, 2)
    assert df["age"].iloc[3] == round((pd.Timestamp("2021-05-05") - born_12).days / 365.25, 2)
    assert report["unmapped_concepts"] == {"measurement": {3004249: 3}, "observation": {}, "condition_occurrence": {201826: 1}}
    assert report["units"]["bili"] == {"mg/dL": 4, "umol/L": 1}
    assert len(report["warnings"]) == 1 and "bili" in report["warnings"][0] and "2 units" in report["warnings"][0]
    assert report["events_outside_visits"] == 1 and report["rows"] == 4 and report["patients"] == 2
    by_day, _ = omop_extract(url, None, parse_mapping({**SMALL, "group_by": "day"}))
    assert by_day["day"].tolist() == [0, 1, 10, 31, 0] and by_day["bili"].tolist() == [1.0, 3.0, 5.0, 7.0, 2.0]


def test_unknown_concepts_and_bad_mapping_files_are_one_input_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'cdm.db'}"
    sqlite3.connect(tmp_path / "cdm.db").close()
    write_tables(url, None, small_cdm())
    absent = {**SMALL, "columns": {**SMALL["columns"], "alb": {"concept_id": 3024561}}}
    with pytest.raises(MappingError, match=r"no rows of concept\(s\) \[3024561\]"):
        omop_extract(url, None, parse_mapping(absent))
    unnamed = {
        **SMALL,
        "columns": {**SMALL["columns"], "stage": {"table": "observation", "concept_id": 2000000015, "labels": {2000000021: "1"}}},
    }
    with pytest.raises(MappingError, match="2000000022"):
        omop_extract(url, None, parse_mapping(unnamed))
    with pytest.raises(MappingError, match="8507"):
        omop_extract(url, None, parse_mapping({**SMALL, "person": {"sex": {"field": "gender", "labels": {8532: "f"}}}}))
    bad = {"name": "x", "id": "pid", "time": "pid", "aggregate": "median", "colour": 1, "columns": {"a": {"concept_id": "x"}}}
    with pytest.raises(MappingError) as err:
        parse_mapping(bad)
    msg = str(err.value)
    assert all(w in msg for w in ("colour", "median", "concept_id must be an integer", "two different")) and "\n" not in msg
    (tmp_path / "m.yaml").write_text("columns: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_mapping(tmp_path / "m.yaml")


def test_the_pbc_cohort_goes_through_omop_and_back_unchanged(tmp_path):
    real = pd.read_csv(DEMO_DATA)
    mapping = load_mapping(PBC_MAPPING)
    url = f"sqlite:///{tmp_path / 'omop.db'}"
    sqlite3.connect(tmp_path / "omop.db").close()
    rows = load_extract(real, mapping, url, None)
    assert rows["person"] == 312 and rows["visit_occurrence"] == 1945
    assert rows["measurement"] == int(real[[c.name for c in mapping.columns if c.table == "measurement"]].notna().sum().sum())
    back, report = omop_extract(url, None, mapping)
    assert report["unmapped_concepts"] == {"measurement": {}, "observation": {}} and not report["warnings"]
    assert_same_cohort(back, real, "id", "day")


def assert_same_cohort(back: pd.DataFrame, real: pd.DataFrame, idc: str, tc: str) -> None:
    a = real.sort_values([idc, tc]).reset_index(drop=True)
    b = back.sort_values([idc, tc]).reset_index(drop=True)[list(a.columns)]
    assert len(a) == len(b)
    for c in a.columns:
        if pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c]):
            assert np.allclose(a[c].astype(float), b[c].astype(float), atol=0.01, equal_nan=True), c
        else:
            assert (a[c].astype(str).str.removesuffix(".0") == b[c].astype(str).str.removesuffix(".0")).all(), c


def cgd_mapping(df: pd.DataFrame, schema: dict) -> dict:
    """A mapping for the cgd cohort (benchmarks/cohorts.py): local concepts, made up here."""
    columns, conditions, concept = {}, {}, 2000200000
    for name, col in schema["columns"].items():
        if name == "age":
            continue
        if name == "sex":
            continue
        concept += 100
        if name == "propylac":  # a static 0/1 as a condition flag
            conditions[name] = {"concept_ids": [concept]}
        elif col["type"] == "categorical":
            labels = {concept + i + 1: str(v) for i, v in enumerate(sorted(df[name].dropna().astype(str).unique()))}
            columns[name] = {"table": "observation", "concept_id": concept, "labels": labels, "static": bool(col.get("static"))}
        else:
            columns[name] = {"table": "measurement", "concept_id": concept, "static": bool(col.get("static"))}
    sexes = sorted(df["sex"].astype(str).unique())
    person = {"age": {"field": "age"}, "sex": {"field": "gender", "labels": dict(zip([8532, 8507], sexes))}}
    return {
        "name": "cgd",
        "id": schema["id"],
        "time": schema["time"],
        "person": person,
        "columns": columns,
        "conditions": conditions,
    }


def test_a_second_public_cohort_goes_through_omop_in_postgresql_and_back():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cohorts import frame

    df, schema = frame("cgd")
    df = df.assign(**{schema["time"]: df[schema["time"]].round().astype("int64")})  # OMOP dates: whole days
    mapping = parse_mapping(cgd_mapping(df, schema))
    with pg_database() as name:
        load_extract(df, mapping, pg_url(name), "cdm")
        back, report = omop_extract(pg_url(name), "cdm", mapping)
        assert pg_execute(name, "SELECT count(*) FROM cdm.person")[0][0] == df[schema["id"]].nunique()
    assert report["patients"] == df[schema["id"]].nunique() and "condition_occurrence" in report["unmapped_concepts"]
    assert_same_cohort(back, df, schema["id"], schema["time"])


def test_synthetic_frames_carry_fresh_ids_and_anchor_dates_only():
    real = pd.read_csv(DEMO_DATA)
    synthetic = real.assign(id=-real["id"])  # a release's ids: negative integers
    frames = to_omop(synthetic, load_mapping(PBC_MAPPING), date(2000, 1, 1), id_sign=-1)
    assert (frames["person"]["person_id"] < 0).all() and set(frames["person"]["person_id"]).isdisjoint(real["id"])
    for table in ("visit_occurrence", "measurement", "observation", "observation_period"):
        assert (frames[table][f"{table}_id"] < 0).all() and frames[table][f"{table}_id"].is_unique
    visits = frames["visit_occurrence"]
    assert visits.groupby("person_id")["visit_start_date"].min().eq(date(2000, 1, 1)).all()
    assert len(visits) == len(real) and (frames["person"]["year_of_birth"] <= 2000).all()
    with pytest.raises(MappingError, match="stage"):
        to_omop(synthetic.assign(stage=9), load_mapping(PBC_MAPPING), date(2000, 1, 1))
    with pytest.raises(MappingError, match="integers"):
        to_omop(synthetic.assign(id="SYN-" + synthetic["id"].astype(str)), load_mapping(PBC_MAPPING), date(2000, 1, 1))


def _broken(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames with a row the database refuses in the last table (a NULL concept id)."""
    out = dict(frames)
    bad = out["observation"].copy()
    bad.loc[bad.index[-1], "observation_concept_id"] = None
    out["observation"] = bad
    return out


def test_a_write_that_fails_midway_leaves_no_table_in_sqlite(tmp_path):
    frames = to_omop(pd.read_csv(DEMO_DATA).assign(id=lambda d: -d["id"]), load_mapping(PBC_MAPPING), date(2000, 1, 1), -1)
    url = f"sqlite:///{tmp_path / 'out.db'}"
    sqlite3.connect(tmp_path / "out.db").close()
    with pytest.raises(SourceError, match="nothing was written") as err:
        write_tables(url, None, _broken(frames))
    assert "IntegrityError" in str(err.value)

    def fail():
        raise RuntimeError("the tracking server went away")

    with pytest.raises(RuntimeError):
        write_tables(url, None, frames, then=fail)
    with sqlite3.connect(tmp_path / "out.db") as con:
        assert con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    assert write_tables(url, None, frames)["measurement"] == len(frames["measurement"])
    with pytest.raises(SourceError, match="already has table"):
        write_tables(url, None, frames)


def test_a_write_that_fails_midway_leaves_no_schema_or_table_in_postgresql():
    frames = to_omop(pd.read_csv(DEMO_DATA).assign(id=lambda d: -d["id"]), load_mapping(PBC_MAPPING), date(2000, 1, 1), -1)
    with pg_database() as name:
        with pytest.raises(SourceError, match="nothing was written"):
            write_tables(pg_url(name), "synth", _broken(frames))
        assert pg_execute(name, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'synth'")[0][0] == 0
        rows = write_tables(pg_url(name), "synth", frames)
        assert pg_execute(name, "SELECT count(*) FROM synth.measurement")[0][0] == rows["measurement"] > 0
        with pytest.raises(SourceError, match="already has table"):
            write_tables(pg_url(name), "synth", frames)


def test_a_database_target_is_checked_before_anything_is_sampled(tmp_path, monkeypatch):
    from argparse import Namespace

    from diffusion.data.schema import Schema
    from expectations.database import database_target
    from flows.omop import release_target

    schema = Schema.load(ROOT / "flows" / "data" / "pbc.yaml")
    with pytest.raises(SourceError, match="holds a password") as err:
        database_target({"url": "postgresql://u:pw-cli-5@127.0.0.1/x", "omop": str(PBC_MAPPING)}, schema)
    assert "pw-cli-5" not in str(err.value)
    with pytest.raises(SourceError, match="HG_TEST_NOT_SET"):
        database_target({"url_env": "HG_TEST_NOT_SET"}, schema)
    monkeypatch.setenv("HG_TEST_TARGET", f"sqlite:///{tmp_path / 'out.db'}")
    target = database_target({"url_env": "HG_TEST_TARGET", "omop": str(PBC_MAPPING)}, schema)
    assert target.shown.endswith("out.db") and not (tmp_path / "out.db").exists()  # looking creates no file
    other = Schema.from_dict({**schema.to_dict(), "columns": {**schema.to_dict()["columns"], "extra": {"type": "real"}}})
    with pytest.raises(MappingError, match=r"\['extra'\] of the model have no concept"):
        database_target({"url_env": "HG_TEST_TARGET", "omop": str(PBC_MAPPING)}, other)
    write_tables(f"sqlite:///{tmp_path / 'out.db'}", None, {"pbc_synthetic": pd.DataFrame({"id": [-1]})})
    with pytest.raises(SourceError, match="already has table"):
        database_target({"url_env": "HG_TEST_TARGET"}, schema)
    flags = dict(to_db=None, to_db_env=None, db_schema="synth", omop=None, db_table=None, anchor_date=None)
    with pytest.raises(InputError, match="need --to-db"):
        release_target(Namespace(**flags))
    assert release_target(Namespace(**{**flags, "to_db": "sqlite:///x.db"})) == {"url": "sqlite:///x.db", "schema": "synth"}


def test_a_plain_table_release_holds_the_release_rows(tmp_path):
    from diffusion.data.schema import Schema
    from expectations.database import database_target

    schema = Schema.load(ROOT / "flows" / "data" / "pbc.yaml")
    synthetic = pd.read_csv(DEMO_DATA).assign(id=lambda d: -d["id"])
    target = database_target({"url": f"sqlite:///{tmp_path / 'rel.db'}", "table": "pbc_release"}, schema)
    frames = target.frames(synthetic, schema.name)
    assert target.describe(frames) == {
        "target": f"sqlite:///{tmp_path / 'rel.db'}",
        "schema": None,
        "kind": "table",
        "rows": {"pbc_release": 1945},
    }
    calls = []
    target.write(frames, then=lambda: calls.append("recorded"))
    with sqlite3.connect(tmp_path / "rel.db") as con:
        back = pd.read_sql("SELECT * FROM pbc_release", con)
    assert calls == ["recorded"]
    pd.testing.assert_frame_equal(back, synthetic, check_dtype=False)


def test_the_omop_commands_refuse_bad_input_with_exit_2_and_no_password(tmp_path):
    from test_pipeline import healthgym

    res = healthgym(
        tmp_path,
        "omop",
        "extract",
        "--url",
        "postgresql://u:pw-on-cli-4@127.0.0.1/x",
        "--mapping",
        str(PBC_MAPPING),
        "--out",
        "x.csv",
    )
    assert res.returncode == 2 and "holds a password" in res.stderr and "pw-on-cli-4" not in res.stderr + res.stdout
    res = healthgym(tmp_path, "omop", "extract", "--url", "sqlite:///none.db", "--mapping", "nope.yaml", "--out", "x.csv")
    assert res.returncode == 2 and "nope.yaml does not exist" in res.stderr and "Traceback" not in res.stderr
    res = healthgym(tmp_path, "omop", "extract", "--url", "sqlite:///none.db", "--mapping", str(PBC_MAPPING), "--out", "x.csv")
    assert res.returncode == 2 and "does not exist" in res.stderr and not (tmp_path / "none.db").exists()
    assert not (tmp_path / "x.csv").exists()
    res = healthgym(tmp_path, "release", "--name", "pbc", "--omop", str(PBC_MAPPING))
    assert res.returncode == 2 and "need --to-db" in res.stderr
