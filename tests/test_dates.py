"""Dates in and out (diffusion.data.dates), synthetic ids (diffusion.privacy.ids), and a hospital-shaped
extract (text ids, ISO visit dates, a static birth date, a diagnosis code) end to end."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_pipeline import FAST, healthgym

from diffusion.data.dates import Dating, as_units, k_bins, numeric_schema, snap, to_dates, to_numbers
from diffusion.data.inference import infer_schema
from diffusion.data.schema import Schema, SchemaError
from diffusion.privacy.ids import HIGH, IdScheme
from expectations import validate_extract

SCHEMA = {
    "name": "clinic",
    "id": "mrn",
    "time": {"column": "visit_date", "unit": "day"},
    "max_length": 8,
    "columns": {
        "birth_date": {"type": "date", "static": True},
        "dx": {"type": "categorical", "static": True, "categories": ["E11.9", "I10", "J44.1", "N18.3"]},
        "sex": {"type": "categorical", "static": True, "categories": ["F", "M"]},
        "hba1c": {"type": "real", "min": 0},
        "sbp": {"type": "integer", "min": 0},
        "smoker": {"type": "binary"},
    },
}


def clinic(n: int = 90, seed: int = 0) -> pd.DataFrame:
    """Patients as a hospital extracts them: MRN text ids, ISO dates, rows in any order."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        birth = pd.Timestamp("1940-01-01") + pd.Timedelta(days=int(rng.integers(0, 60 * 365)))
        day = pd.Timestamp("2015-01-01") + pd.Timedelta(days=int(rng.integers(0, 5 * 365)))
        dx, sex, level = (
            rng.choice(["E11.9", "I10", "J44.1", "N18.3"], p=[0.4, 0.3, 0.2, 0.1]),
            rng.choice(["F", "M"]),
            rng.normal(),
        )
        for _ in range(int(rng.integers(2, 9))):
            rows.append(
                {
                    "mrn": f"MRN{p:05d}",
                    "visit_date": day.strftime("%Y-%m-%d"),
                    "birth_date": birth.strftime("%Y-%m-%d"),
                    "dx": dx,
                    "sex": sex,
                    "hba1c": round(float(6.5 + 0.8 * level + 0.3 * rng.normal()), 1),
                    "sbp": int(130 + 12 * level + 8 * rng.normal()),
                    "smoker": bool(rng.random() < 0.3),
                }
            )
            day += pd.Timedelta(days=int(rng.integers(14, 200)))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_schema_reads_and_writes_a_date_time_column_and_date_columns():
    s = Schema.from_dict(SCHEMA)
    assert (s.time, s.time_unit) == ("visit_date", "day") and s.column("birth_date").type == "date"
    assert Schema.from_dict(yaml.safe_load(s.to_yaml())) == s
    engine = numeric_schema(s)
    assert engine.time_unit is None and engine.column("birth_date").type == "real" and engine.column("birth_date").static
    bad = dict(SCHEMA, regular=True, time={"column": "visit_date", "unit": "fortnight"})
    bad["columns"] = dict(SCHEMA["columns"], seen={"type": "date"})
    with pytest.raises(SchemaError) as err:
        Schema.from_dict(bad)
    msg = str(err.value)
    assert "'fortnight'" in msg and "must be static" in msg and "'regular' must be false" in msg


def test_dates_become_units_since_1970_and_come_back():
    s = pd.Series(["1970-01-02", "2024-03-01T12:00:00", None, "not a date"])
    np.testing.assert_allclose(as_units(s, "day").to_numpy()[:2], [1.0, 19783.5])
    assert as_units(s, "hour").iloc[0] == 24.0 and as_units(s, "day").iloc[2:].isna().all()
    back = to_dates(pd.Series([1.0, 19783.5, np.nan]), "day", "datetime")
    assert list(back[:2]) == ["1970-01-02T00:00:00", "2024-03-01T12:00:00"] and back.iloc[2] is None
    assert list(to_dates(pd.Series([19783.0]), "day", "date")) == ["2024-03-01"]
    tz = pd.Series(pd.to_datetime(["2024-03-01T01:00:00+01:00"]))
    assert as_units(tz, "hour").iloc[0] == as_units(pd.Series(["2024-03-01T00:00:00"]), "hour").iloc[0]


@pytest.mark.parametrize("n,span_days", [(40, 5 * 365), (2000, 3 * 365), (300, 20)])
def test_bins_hold_k_patients_and_start_on_calendar_points(n, span_days):
    rng = np.random.default_rng(n)
    days = 16000 + rng.integers(0, span_days, size=n).astype(float)
    grid, starts = k_bins(days, np.arange(n), 5, "day")
    assert starts == sorted(starts) and len(starts) >= 1
    snapped = snap(days, starts)
    counts = pd.Series(snapped).value_counts()
    assert set(counts.index) <= set(starts) and counts.min() >= 5  # every released value stands for >= k patients
    stamps = pd.to_datetime(pd.Series(starts) * 86400e9)
    if grid == "month":
        assert (stamps.dt.day == 1).all()
    if grid == "year":
        assert ((stamps.dt.day == 1) & (stamps.dt.month == 1)).all()
    # more patients over a shorter span: a finer grid
    assert {40: "year", 2000: "week", 300: "day"}[n] == grid


def test_dating_keeps_gaps_orders_visits_and_coarsens_first_dates():
    schema = Schema.from_dict(SCHEMA)
    raw = clinic(120)
    numbers = to_numbers(raw, schema)
    dating = Dating.fit(raw, numbers, schema, k=5)
    out = dating.apply(numbers, schema)
    assert out["visit_date"].str.match(r"^\d{4}-\d{2}-\d{2}$").all() and out["birth_date"].str.match(r"^\d{4}-").all()
    t = pd.to_datetime(out["visit_date"])
    gaps_in = numbers.sort_values(["mrn", "visit_date"]).groupby("mrn")["visit_date"].diff().dropna()
    gaps_out = out.assign(t=t).sort_values(["mrn", "t"]).groupby("mrn")["t"].diff().dropna().dt.days
    np.testing.assert_array_equal(np.sort(gaps_in.to_numpy()), np.sort(gaps_out.to_numpy()))
    firsts = out.assign(t=t).groupby("mrn")["t"].min()
    assert firsts.value_counts().min() >= 5 and out.groupby("mrn")["birth_date"].first().value_counts().min() >= 5
    assert dating.numbers(out, numeric_schema(schema)).equals(dating.numbers(raw, numeric_schema(schema)).loc[out.index])


def test_validation_names_unparsable_dates_by_count_and_reports_no_false_duplicates():
    schema = Schema.from_dict(SCHEMA)
    df = clinic(30)
    assert validate_extract(df, schema).success
    df.loc[:3, "visit_date"] = "13/45/2020"
    df.loc[5, "birth_date"] = "someday"
    report = validate_extract(df, schema)
    text = " ".join(f.description for f in report.failures)
    assert not report.success and "must be dates" in text and "13/45/2020" not in str(report.to_dict())
    assert not any(f.column.startswith("mrn,") or "unique" in f.description for f in report.failures)
    counts = {
        (f.column, f.description.split(" (")[0]): f.unexpected_count for f in report.failures if "must be dates" in f.description
    }
    assert sorted(counts.values()) == [1, 4] and {c for c, _ in counts} == {"visit_date", "birth_date"}


def test_infer_recognises_date_time_and_static_date_columns():
    df = clinic(20)
    df["admitted"] = df["visit_date"]  # a date that changes within a patient: left out, said so
    s = infer_schema(df, id_col="mrn", time_col="visit_date", name="clinic")
    assert s.time_unit == "day" and not s.regular and s.column("birth_date").type == "date"
    assert "admitted" not in s.column_names and "admitted" in s.description
    assert s.column("dx").type == "categorical" and s.column("smoker").type == "binary"


@pytest.mark.parametrize(
    "real,kind",
    [
        (pd.Series([3, 1, 2], dtype="int64"), "negative"),
        (pd.Series([-3, 1, 2], dtype="int64"), "high"),
        (pd.Series(["MRN1", "MRN2"]), "prefix"),
    ],
)
def test_synthetic_ids_keep_the_type_and_never_equal_a_real_id(real, kind):
    scheme = IdScheme.fit(real)
    assert scheme.kind == kind
    frame = pd.DataFrame({"id": np.repeat(np.arange(1, 4), 2)})
    out = scheme.apply(frame, "id")
    assert out["id"].nunique() == 3 and not set(out["id"]) & set(real)
    assert (out["id"].dtype.kind == "i") == (kind != "prefix")
    if kind == "high":
        assert out["id"].min() > HIGH
    assert IdScheme.from_dict(scheme.to_dict()) == scheme and scheme.describe()


def test_a_text_id_prefix_that_real_ids_use_is_avoided():
    scheme = IdScheme.fit(pd.Series(["syn-000001", "A7"]))
    assert scheme.prefix == "SYN2-" and not scheme.ids(3)[0].upper().startswith("SYN-")


@pytest.mark.slow
def test_a_hospital_extract_goes_from_schema_infer_to_a_release(tmp_path):
    """Text ids, ISO dates, a static birth date and a diagnosis code: infer -> validate -> train
    -> release with no manual conversion; the release has dates in order and no real id."""
    real = clinic(90)
    real.to_csv(tmp_path / "ext.csv", index=False)
    inferred = healthgym(tmp_path, "schema", "infer", "ext.csv", "--id", "mrn", "--time", "visit_date")
    assert inferred.returncode == 0, inferred.stderr[-2000:]
    (tmp_path / "ext.yaml").write_text(inferred.stdout)
    assert healthgym(tmp_path, "validate", "ext.csv", "--schema", "ext.yaml").returncode == 0
    res = healthgym(tmp_path, "train", "ext.csv", "--schema", "ext.yaml", "--release", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    release = Path(next(line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith("Release folder:")))
    release = release if release.is_absolute() else tmp_path / release
    syn = pd.read_csv(release / "synthetic.csv")
    assert list(syn.columns) == list(real.columns) and not set(syn["mrn"]) & set(real["mrn"])
    t = pd.to_datetime(syn["visit_date"], format="%Y-%m-%d")
    assert (syn.assign(t=t).groupby("mrn")["t"].diff().dropna() > pd.Timedelta(0)).all()
    assert syn.groupby("mrn")["birth_date"].nunique().max() == 1
    assert pd.to_datetime(syn["birth_date"], format="%Y-%m-%d").notna().all()
    assert "SYN-" in (release / "manifest.json").read_text()
    real_births = set(real["birth_date"])
    assert syn.groupby("mrn")["birth_date"].first().map(lambda d: d in real_births).mean() < 0.5


def test_the_grid_is_never_finer_than_the_unit():
    days = 16000 + np.arange(5000) / 5000  # 5,000 first visits within one day: an hourly grid would hold k
    assert k_bins(days, np.arange(5000), 5, "day")[0] == "day"
    assert k_bins(days * 24, np.arange(5000), 5, "hour")[0] == "hour"
    assert k_bins(days * 24 * 60, np.arange(5000), 5, "minute")[0] == "hour"
