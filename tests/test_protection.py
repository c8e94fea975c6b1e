"""Value protection: no released value and no stored statistic beyond what k patients share."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from simulated import SCHEMA, population
from test_pipeline import FAST, healthgym

from diffusion.data.schema import Schema
from diffusion.encoding.layout import pooled_counts
from diffusion.privacy.protection import RARE, Protection, k_bounds

PLANTED_VALUE = 987.654  # albumin of one planted patient: far beyond anyone else's
PLANTED_LABEL = "Zeta"  # a stage that one patient alone has


def planted(n: int = 80, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    df = population(n, seed=seed)
    one = df["pid"] == df["pid"].iloc[0]
    df.loc[one, "alb"] = PLANTED_VALUE
    df.loc[one, "stage"] = PLANTED_LABEL
    raw = json.loads(json.dumps(SCHEMA))
    raw["columns"]["stage"]["categories"] = ["1", "2", "3", PLANTED_LABEL]
    raw["columns"]["alb"].pop("max", None)
    return df, raw


def test_k_bounds_are_the_kth_most_extreme_patients_values():
    values = pd.Series([1.0, 2.0, 100.0, 3.0, 4.0, 5.0, -50.0, 6.0])
    patient = pd.Series([0, 0, 1, 2, 3, 4, 5, 6])  # patient 0 has two visits
    assert k_bounds(values, patient, 1) == (-50.0, 100.0)
    assert k_bounds(values, patient, 2) == (1.0, 6.0)  # patient 0 counts once, by its min (1) and its max (2)
    assert k_bounds(values, patient, 8) is None


@pytest.mark.parametrize("mode", ["resample", "merge"])
def test_protection_cuts_tails_and_replaces_rare_labels(mode):
    df, raw = planted()
    schema = Schema.from_dict(raw)
    p = Protection.fit(df, schema, k=5, rare_mode=mode)
    out = p.apply(df, p.schema(schema))
    assert out["alb"].max() < 10 and PLANTED_VALUE not in out["alb"].to_numpy()
    assert PLANTED_LABEL not in set(out["stage"])
    assert (RARE in set(out["stage"])) == (mode == "merge")
    assert (RARE in p.schema(schema).column("stage").categories) == (mode == "merge")
    assert PLANTED_LABEL not in p.schema(schema).column("stage").categories
    # at least k patients sit at or beyond each bound: the bound is no single patient's value
    for col, (lo, hi) in p.bounds.items():
        per_patient = out.groupby("pid")[col]
        assert (per_patient.min() <= lo + 1e-12).sum() >= 5 and (per_patient.max() >= hi - 1e-12).sum() >= 5, col
    # times still increase within every patient; no patient is longer than the k-th longest
    assert (out.sort_values(["pid", "day"]).groupby("pid")["day"].diff().dropna() > 0).all()
    assert out.groupby("pid").size().max() <= np.sort(df.groupby("pid").size())[-5]
    assert json.dumps(p.to_dict())  # JSON-able aggregates only


def test_a_column_too_few_patients_fill_is_refused_clearly():
    df, raw = planted(20)
    df["crp"] = np.nan
    df.loc[df["pid"] < 2, "crp"] = 3.0
    from diffusion.errors import InputError

    with pytest.raises(InputError, match="crp.*fewer than privacy.k"):
        Protection.fit(df, Schema.from_dict(raw), k=5)


@pytest.mark.slow
def test_a_planted_patient_reaches_no_release_and_no_mlflow_artifact(tmp_path):
    """A patient with a unique extreme value and a unique category, trained on and released:
    the value appears in no file of the release or of MLflow's artifacts; the label in none
    but those that render the user's own schema, which declares it (schema.json, and the Great
    Expectations suite and result built from it)."""
    import yaml

    df, raw = planted(80)
    raw["name"] = "planted"
    df.to_csv(tmp_path / "planted.csv", index=False)
    (tmp_path / "planted.yaml").write_text(yaml.safe_dump(raw))
    res = healthgym(
        tmp_path,
        "train",
        "planted.csv",
        "--schema",
        "planted.yaml",
        "--release",
        *FAST,
        "--set",
        "evaluation.gates.max_exact_copies=1000",
        "--set",
        "evaluation.gates.min_in_bounds=0",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    release = Path(next(line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith("Release folder:")))
    release = release if release.is_absolute() else tmp_path / release
    data = pd.read_csv(release / "data.csv") if (release / "data.csv").exists() else pd.read_csv(next(release.glob("*.csv")))
    assert data["alb"].max() < 10 and PLANTED_LABEL not in set(data["stage"].astype(str))
    checked = 0
    for folder in (release, tmp_path / "mlruns"):
        for path in folder.rglob("*"):
            if not path.is_file():
                continue
            text = path.read_bytes()
            assert b"987.654" not in text and b"987.65" not in text, path
            declared = path.name == "schema.json" or "validation" in path.relative_to(folder).parts
            assert declared or PLANTED_LABEL.encode() not in text, path
            checked += 1
    assert checked > 10


def test_the_length_histogram_keeps_its_shape_and_shows_no_value_fewer_than_k_hold():
    # a cohort that nearly always completes its visits keeps that mode (three short patients are
    # fewer than k, so they count at the nearest value k patients hold)
    assert pooled_counts(np.array([2, 8, 10] + [12] * 27), k=5) == {"12": 30.0}
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(0.05, size=1000), 300)  # skewed: many short, a long tail
    hist = pooled_counts(lengths, k=5)
    keys = np.array([int(v) for v in hist])
    counts = np.array(list(hist.values()))
    assert counts.sum() == pytest.approx(1000)
    ordered = np.sort(lengths)
    assert keys.min() >= ordered[4] and keys.max() <= ordered[-5]  # no single patient's extreme
    values, held = np.unique(np.clip(ordered, ordered[4], ordered[-5]), return_counts=True)
    anchors = values[held >= 5]
    for a, b in zip(anchors, anchors[1:]):  # between two values k patients hold: no key, or every integer
        between = set(keys[(keys > a) & (keys < b)])
        assert between in (set(), set(range(a + 1, b)))
    assert len(keys) > len(anchors)  # rare lengths are kept, hidden in ranges
    cdf = np.cumsum(counts[np.argsort(keys)]) / counts.sum()
    real = np.searchsorted(ordered, np.sort(keys), side="right") / len(lengths)
    assert np.abs(cdf - real).max() < 0.03  # the shape is kept
