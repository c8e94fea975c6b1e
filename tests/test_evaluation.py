"""Evaluation library: measures with known answers on the bundled PBC cohort.

The PBC patients are split into training and holdout halves. Stand-in "generators":
- the real holdout itself (a perfect generator's floor),
- copies of training patients under fresh ids (memorisation),
- every column shuffled independently across rows and time (right marginals, no trajectories),
- broken ones: a static column that flips within a patient, times that go backwards.
Each scenario is evaluated once per module (fixtures), then checked from several sides.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from diffusion.config import EvaluationConfig, GateConfig
from diffusion.data.labels import canonical_label
from diffusion.data.schema import Schema
from evaluation import EvaluationResult, GateResult, evaluate, evaluate_files, fidelity, temporal, validity
from evaluation.data import patient_features, tidy
from evaluation.gates import check

FAST = EvaluationConfig(discriminator_folds=3)


# ---- generators -------------------------------------------------------------------------------------
def split(pbc: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training half, holdout quarter, and another unseen quarter (the "perfect generator")."""
    ids = np.random.default_rng(seed).permutation(np.sort(pbc["id"].unique()))
    cuts = np.split(ids, [len(ids) // 2, 3 * len(ids) // 4])
    return tuple(pbc[pbc["id"].isin(part)].reset_index(drop=True) for part in cuts)


def copy_generator(train: pd.DataFrame) -> pd.DataFrame:
    out = train.copy()
    out["id"] = out["id"] + 100_000
    return out


def shuffle_generator(train: pd.DataFrame, schema: Schema, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = train.copy()
    for name in schema.column_names:
        out[name] = out[name].to_numpy()[rng.permutation(len(out))]
    out["id"] = out["id"] + 200_000
    return out


@pytest.fixture(scope="module")
def halves(pbc):
    return split(pbc)


@pytest.fixture(scope="module")
def floor_result(halves, pbc_schema) -> EvaluationResult:
    train, holdout, unseen = halves
    return evaluate(train, unseen, pbc_schema, holdout=holdout, config=FAST)


@pytest.fixture(scope="module")
def copy_result(halves, pbc_schema) -> EvaluationResult:
    train, holdout, _ = halves
    return evaluate(train, copy_generator(train), pbc_schema, holdout=holdout, config=FAST)


@pytest.fixture(scope="module")
def shuffle_result(halves, pbc_schema) -> EvaluationResult:
    train, holdout, _ = halves
    return evaluate(train, shuffle_generator(train, pbc_schema), pbc_schema, holdout=holdout, config=FAST)


def gate(result: EvaluationResult, name: str) -> GateResult:
    return next(g for g in result.gates if g.name == name)


# ---- the real holdout: near its floor -----------------------------------------------------------------
def test_real_holdout_scores_near_the_floor(floor_result):
    m = floor_result.metrics
    assert m["discriminator_auc"] <= 0.6
    assert m["fidelity.marginal_score"] >= 0.85
    assert m["fidelity.quality_score"] >= 0.8
    assert m["temporal.lag1_abs_diff.mean"] <= 0.1
    assert 0.3 <= m["privacy.dcr_share"] <= 0.7
    assert m["privacy.mia_auc"] <= 0.65
    assert m["privacy.exact_copies"] == 0
    assert m["validity.static_consistency"] == 1.0 and m["validity.time_order"] == 1.0
    assert m["validity.in_bounds"] == 1.0 and m["validity.in_categories"] == 1.0
    assert floor_result.passed, floor_result.failed_gates_message()
    assert floor_result.failed_gates_message() == "Every release gate passed."


def test_calibration_sits_beside_the_measures(floor_result):
    cal = floor_result.calibration
    assert cal["discriminator_auc"] <= 0.65
    assert set(cal) <= set(floor_result.metrics) and "fidelity.quality_score" in cal
    # privacy calibration: half of the holdout against the other half, so no copies and a fair share
    assert cal["privacy.exact_copies"] == 0
    assert 0.25 <= cal["privacy.dcr_share"] <= 0.75
    assert {"utility.trtr.auc", "utility.tstr.auc", "utility.auc_gap"} <= set(floor_result.metrics)


# ---- memorisation: the privacy gates fail ---------------------------------------------------------------
def test_copying_generator_fails_privacy(copy_result):
    m = copy_result.metrics
    assert m["privacy.dcr_share"] >= 0.95
    assert m["privacy.mia_auc"] >= 0.9
    assert m["privacy.exact_copies"] > 0
    assert m["privacy.near_copy_share"] >= 0.9
    assert m["privacy.sdmetrics.dcr_overfitting_protection"] <= 0.2
    assert not copy_result.passed
    failed = {g.name for g in copy_result.gates if not g.passed}
    assert {
        "privacy.dcr_share.ci_low",
        "privacy.mia_auc.ci_low",
        "privacy.near_copy_share.ci_low",
        "privacy.exact_copy_excess.ci_low",
    } <= failed
    msg = copy_result.failed_gates_message()
    for name in ("privacy.dcr_share", "privacy.mia_auc", "privacy.exact_copy_excess"):
        assert name in msg
    assert "must be <= 0.55" in msg and "\n" not in msg


# ---- shuffling: marginals pass, trajectories and the discriminator fail -------------------------------------
def test_shuffled_generator_passes_marginals_fails_temporal(shuffle_result, floor_result):
    m = shuffle_result.metrics
    labs = ("bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime")
    # a permutation of the training visits: against the holdout, each lab's marginal scores as the training patients do
    for lab in labs:
        key = f"fidelity.ks_complement.{lab}"
        assert m[key] == pytest.approx(shuffle_result.calibration[key], abs=1e-12), lab
    assert m["fidelity.marginal_score"] >= shuffle_result.calibration["fidelity.marginal_score"] - 0.05
    assert m["temporal.lag1_abs_diff.mean"] >= 0.4
    assert m["temporal.lag1_abs_diff.mean"] > 5 * floor_result.metrics["temporal.lag1_abs_diff.mean"]
    assert m["temporal.stay_prob_abs_diff.max"] >= 0.2
    assert m["temporal.trend_corr_abs_diff"] > floor_result.metrics["temporal.trend_corr_abs_diff"]
    assert m["discriminator_auc"] >= 0.85 and m["discriminator_auc"] > shuffle_result.calibration["discriminator_auc"] + 0.3
    assert m["validity.static_consistency"] < 0.1  # shuffled static columns flip within patients
    failed = {g.name for g in shuffle_result.gates if not g.passed}
    assert {"temporal.lag1_abs_diff.mean", "discriminator_auc", "validity.static_consistency"} <= failed


# ---- repeatable --------------------------------------------------------------------------------------------
def test_every_measure_is_seeded_and_repeatable(halves, pbc_schema, shuffle_result):
    train, holdout, _ = halves
    again = evaluate(train, shuffle_generator(train, pbc_schema), pbc_schema, holdout=holdout, config=FAST)
    assert again.metrics == shuffle_result.metrics
    assert again.calibration == shuffle_result.calibration
    assert [g.to_dict() for g in again.gates] == [g.to_dict() for g in shuffle_result.gates]


def test_metrics_are_flat_json_floats(floor_result):
    for d in (floor_result.metrics, floor_result.calibration):
        assert all(isinstance(k, str) and isinstance(v, float) and math.isfinite(v) for k, v in d.items())
        json.dumps(d, allow_nan=False)


# ---- hard rules -------------------------------------------------------------------------------------------
def test_static_consistency_detects_a_flipping_static_column(halves, pbc_schema):
    _, holdout, _ = halves
    syn = holdout.copy()
    flip = syn.groupby("id").cumcount() == 1  # the second visit of every patient with two or more
    syn.loc[flip, "sex"] = syn.loc[flip, "sex"].map({"f": "m", "m": "f"})
    share = (syn.groupby("id").size() >= 2).mean()
    m = validity.validity(tidy(syn, pbc_schema), pbc_schema, syn)
    assert m["validity.static_consistency"] == pytest.approx(1 - share)
    g = next(g for g in check(m, GateConfig(), has_holdout=True) if g.name == "validity.static_consistency")
    assert g.evaluated and not g.passed


def test_time_order_detects_non_increasing_times(halves, pbc_schema):
    _, holdout, _ = halves
    syn = holdout.copy()
    ids = syn["id"].unique()[:10]
    for pid in ids:  # reverse the times of 10 patients, row order unchanged
        sel = syn["id"] == pid
        syn.loc[sel, "day"] = syn.loc[sel, "day"].to_numpy()[::-1]
    multi = (syn[syn["id"].isin(ids)].groupby("id").size() >= 2).sum()
    n = syn["id"].nunique()
    m = validity.validity(tidy(syn, pbc_schema), pbc_schema, syn)
    assert m["validity.time_order"] == pytest.approx(1 - multi / n)
    dup = holdout.copy()
    dup.loc[dup.groupby("id").cumcount() == 1, "day"] = 0  # a repeated time is not increasing
    assert validity.time_order(dup, pbc_schema) < 1.0
    assert validity.time_order(holdout, pbc_schema) == 1.0


def test_bounds_and_categories(halves, pbc_schema):
    _, holdout, _ = halves
    syn = holdout.copy()
    syn.loc[syn.index[:20], "albumin"] = -1.0  # below min 0
    syn.loc[syn.index[:10], "stage"] = 7  # not a declared category
    m = validity.validity(tidy(syn, pbc_schema), pbc_schema, syn)
    assert m["validity.in_bounds"] < 1.0 and m["validity.in_categories"] < 1.0


def test_identical_data_scores_one(halves, pbc_schema):
    train, _, _ = halves
    r, s = tidy(train, pbc_schema), tidy(copy_generator(train), pbc_schema)
    m = fidelity.marginals(r, s, pbc_schema) | fidelity.correlations(r, s, pbc_schema) | temporal.temporal(r, s, pbc_schema)
    m |= fidelity.missingness(r, s, pbc_schema) | temporal.dynamic_correlations(r, s, pbc_schema)
    assert m["fidelity.marginal_score"] == pytest.approx(1.0)
    for key in (
        "fidelity.correlation_abs_diff",
        "temporal.lag1_abs_diff.max",
        "temporal.stay_prob_abs_diff.max",
        "temporal.transition_tvd.mean",
        "temporal.length_tvd",
        "temporal.gap_ks",
        "missing.rate_abs_diff.max",
        "temporal.trend_corr_abs_diff",
        "temporal.cycle_corr_abs_diff",
    ):
        assert m[key] == pytest.approx(0.0, abs=1e-12), key


def test_copies_score_as_the_training_patients_they_copy(copy_result):
    """Judged against the holdout, a copy of the training patients is exactly as good as the
    training patients themselves (the floor): memorisation buys no fidelity."""
    for key in ("fidelity.quality_score", "fidelity.marginal_score", "temporal.lag1_abs_diff.mean"):
        assert copy_result.metrics[key] == pytest.approx(copy_result.calibration[key], abs=1e-9), key
    assert copy_result.metrics["discriminator_auc"] == pytest.approx(copy_result.calibration["discriminator_auc"], abs=0.05)
    assert copy_result.metrics["fidelity.diagnostic_score"] == pytest.approx(copy_result.calibration["fidelity.diagnostic_score"])


def test_labels_compare_through_canonical_forms(halves, pbc_schema):
    """Categoricals as numbers in one frame and strings in the other give the same measures."""
    train, holdout, _ = halves
    as_text = holdout.copy()
    for col in ("status", "edema", "stage"):  # labels as text, the way the schema lists them ("0", "0.5", "1")
        as_text[col] = as_text[col].map(lambda v: None if pd.isna(v) else canonical_label(v))
    for col in ("trt", "ascites"):  # binaries as true/false
        as_text[col] = as_text[col].map(lambda v: None if pd.isna(v) else {0: "false", 1: "true"}[int(v)])
    a, b, c = tidy(train, pbc_schema), tidy(holdout, pbc_schema), tidy(as_text, pbc_schema)
    assert fidelity.marginals(a, b, pbc_schema) == fidelity.marginals(a, c, pbc_schema)
    assert temporal.temporal(a, b, pbc_schema) == temporal.temporal(a, c, pbc_schema)


def test_trend_cycle_matrices(halves, pbc_schema):
    train, _, _ = halves
    trend, cycle = temporal.trend_cycle(tidy(train, pbc_schema), pbc_schema)
    assert list(trend.columns) == [c.name for c in pbc_schema.temporal_columns if c.numeric]
    for m in (trend, cycle):
        v = m.to_numpy()
        assert np.allclose(v, v.T) and np.allclose(np.diag(v), 1.0) and np.nanmax(np.abs(v)) <= 1.0


def test_patient_features_one_row_per_patient(halves, pbc_schema):
    train, _, _ = halves
    f = patient_features(tidy(train, pbc_schema), pbc_schema)
    assert len(f) == train["id"].nunique()
    assert {"n_visits", "gap_mean", "bili.slope", "bili.missing" if False else "chol.missing", "sex=f", "stage=4.share"} <= set(
        f.columns
    )


# ---- without a holdout ----------------------------------------------------------------------------------
def test_no_holdout_skips_privacy_and_blocks_by_default(halves, pbc_schema):
    train, holdout, _ = halves
    cfg = EvaluationConfig(discriminator_folds=3)
    res = evaluate(train, holdout, pbc_schema, config=cfg)  # the holdout posing as the synthetic set
    assert not any(k.startswith(("privacy.", "utility.")) for k in res.metrics)
    assert res.calibration == {}
    privacy_gates = [g for g in res.gates if g.name.startswith("privacy.")]
    assert privacy_gates and all(not g.evaluated and g.value is None and not g.passed for g in privacy_gates)
    assert not res.passed
    assert "not evaluated" in res.failed_gates_message() and "holdout" in res.failed_gates_message()
    # a custodian may accept fidelity-only evaluation: the privacy gates are then shown, not blocking
    relaxed = check(res.metrics, GateConfig(require_holdout=False), has_holdout=False)
    assert all(g.passed for g in relaxed), [g for g in relaxed if not g.passed]
    assert all(not g.evaluated for g in relaxed if g.name.startswith("privacy."))


# ---- report, files ----------------------------------------------------------------------------------------
def test_report_metrics_and_figures(tmp_path, halves, pbc_schema, pbc):
    train, holdout, _ = halves
    syn = shuffle_generator(train, pbc_schema)
    history = [{"step": s, "loss": 1.0 / (1 + s), "val_loss": 1.2 / (1 + s) if s % 2 == 0 else None} for s in range(0, 500, 50)]
    res = evaluate(train, syn, pbc_schema, holdout=holdout, config=FAST, loss_history=history, out_dir=tmp_path)
    assert res.report_path == tmp_path / "report.html" and res.metrics_path == tmp_path / "metrics.json"
    expected = {
        "marginals",
        "correlations",
        "trajectories",
        "temporal",
        "trend_cycle",
        "sequence_lengths",
        "coverage",
        "privacy",
        "loss_curve",
    }
    assert set(res.figures) == expected
    for p in res.figures.values():
        assert p.parent == tmp_path / "figures" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = res.report_path.read_text()
    assert doc.count("data:image/png;base64,") == len(expected)
    assert "src='figures/" not in doc and "Release blocked" in doc
    saved = json.loads(res.metrics_path.read_text())
    assert saved["metrics"] == res.metrics and saved["passed"] is False
    assert {g["name"] for g in saved["gates"]} == {g.name for g in res.gates}
    # no real rows: distinctive real values (full-precision ages, ids) never appear in the text
    text = doc + res.metrics_path.read_text()
    for age in pbc["age"].unique()[:50]:
        assert repr(float(age)) not in text
    assert not re.search(r"\b(id|patient)\s*[=:]\s*\d", text)


def test_evaluate_files_csv_and_parquet(tmp_path, halves, pbc_schema):
    from conftest import DEMO_SCHEMA

    train, holdout, _ = halves
    train.to_csv(tmp_path / "train.csv", index=False)
    holdout.to_parquet(tmp_path / "holdout.parquet", index=False)
    copy_generator(train).to_csv(tmp_path / "syn.csv", index=False)
    res = evaluate_files(
        tmp_path / "train.csv",
        tmp_path / "syn.csv",
        DEMO_SCHEMA,
        tmp_path / "out",
        holdout_path=tmp_path / "holdout.parquet",
        config=FAST,
    )
    assert (tmp_path / "out" / "report.html").exists() and not res.passed
    assert res.metrics["privacy.exact_copies"] == train["id"].nunique()


def test_default_target_and_missing_columns(halves, pbc_schema):
    from diffusion.errors import InputError
    from evaluation.utility import default_target

    raw = pbc_schema.to_dict()
    raw.pop("target")
    no_target = Schema.from_dict(raw)
    assert default_target(no_target).name == "sex"  # the last static categorical/binary column
    train, holdout, _ = halves
    with pytest.raises(InputError, match="lacks schema column"):
        evaluate(train, holdout.drop(columns=["bili"]), pbc_schema)


# ---- another shape of schema ----------------------------------------------------------------------------
def make_cohort(n: int, seed: int) -> pd.DataFrame:
    """A regular-time cohort: AR(1) series, a sticky label, a numeric static target."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n):
        age = rng.uniform(20, 80)
        x, c = rng.normal(), rng.choice(["lo", "hi"])
        for t in range(int(rng.integers(3, 9))):
            x = 0.8 * x + rng.normal(0, 0.6)
            c = c if rng.random() < 0.85 else ("lo" if c == "hi" else "hi")
            rows.append(
                {
                    "pid": f"p{seed}-{pid}",
                    "step": t,
                    "age": age,
                    "x": x + age / 20,
                    "n": int(rng.poisson(3)),
                    "c": c,
                    "flag": float(rng.random() < 0.3) if rng.random() > 0.1 else np.nan,
                }
            )
    return pd.DataFrame(rows)


GENERIC = {
    "name": "generic",
    "id": "pid",
    "time": "step",
    "regular": True,
    "max_length": 6,
    "target": "age",
    "columns": {
        "age": {"type": "real", "static": True, "min": 0},
        "x": {"type": "real"},
        "n": {"type": "integer", "min": 0},
        "c": {"type": "categorical", "categories": ["lo", "hi"]},
        "flag": {"type": "binary", "nullable": True},
    },
}


def test_generic_schema_numeric_target_and_truncation(tmp_path):
    schema = Schema.from_dict(GENERIC)
    real, holdout, syn = make_cohort(80, 1), make_cohort(40, 2), make_cohort(80, 3)
    res = evaluate(real, syn, schema, holdout=holdout, config=FAST, out_dir=tmp_path)
    m = res.metrics
    assert {"utility.trtr.r2", "utility.tstr.r2", "utility.trtr.mae", "utility.r2_gap"} <= set(m)
    assert m["utility.tstr.r2"] > 0.5  # age is recoverable from the series' level
    assert m["discriminator_auc"] <= 0.7 and m["privacy.exact_copies"] == 0
    assert tidy(real, schema).groupby("_pid").size().max() == 6  # cut to max_length
    assert m["temporal.gap_ks"] == 0.0  # regular steps
    assert "temporal.trend_corr_abs_diff" in m and "temporal.lag1.real.n" in m
    assert m["temporal.lag1.real.x"] > 0.5 and "temporal.transition_tvd.c" in m and "temporal.stay_prob.real.flag" in m
    assert "privacy.sdmetrics.disclosure_protection" not in m  # numeric target: no CAP attack
    assert res.passed, res.failed_gates_message()
    assert {"marginals", "trajectories", "temporal", "trend_cycle", "sequence_lengths", "privacy"} <= set(res.figures)


def test_rank_lag1_is_not_dominated_by_a_few_extreme_visits():
    """Smooth AR(1) trajectories: Pearson and Spearman lag-1 agree; one spiked visit in a few
    patients drags Pearson's down, while the rank version barely moves."""
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(60):
        x = rng.normal()
        for pos in range(10):
            x = 0.8 * x + 0.6 * rng.normal()
            rows.append({"_pid": pid, "_pos": pos, "v": x})
    df = pd.DataFrame(rows)
    clean = (temporal.lag1(df, "v"), temporal.lag1(df, "v", rank=True))
    assert abs(clean[0] - clean[1]) < 0.05 and clean[0] > 0.6
    spiked = df.copy()
    spiked.loc[(spiked["_pos"] == 5) & (spiked["_pid"] < 4), "v"] = 60.0
    assert temporal.lag1(spiked, "v") < clean[0] - 0.3
    assert abs(temporal.lag1(spiked, "v", rank=True) - clean[1]) < 0.05


@pytest.mark.parametrize("window", [2, 3, 4, 5])
def test_centred_mean_is_pandas_rolling_within_each_patient(window):
    from evaluation.temporal import centred_mean

    rng = np.random.default_rng(window)
    pid = np.repeat(np.arange(60), rng.integers(1, 9, 60))
    x = rng.normal(size=(len(pid), 3))
    x[rng.random(x.shape) < 0.2] = np.nan
    expected = pd.DataFrame(x).groupby(pid).transform(lambda s: s.rolling(window, center=True, min_periods=1).mean())
    np.testing.assert_allclose(centred_mean(x, pid, window), expected.to_numpy(), equal_nan=True)


def test_distribution_measures_read_at_most_max_patients_and_the_counts_say_all(halves, pbc_schema, tmp_path):
    import json

    train, holdout, _ = halves
    syn = shuffle_generator(train, pbc_schema)
    capped = EvaluationConfig(discriminator_folds=3, max_patients=60)
    res = evaluate(train, syn, pbc_schema, holdout=holdout, config=capped, out_dir=tmp_path)
    full = evaluate(train, syn, pbc_schema, holdout=holdout, config=FAST)
    counts = json.loads(res.metrics_path.read_text())["counts"]
    assert counts["real_patients"] == train["id"].nunique() > 60  # the report counts every patient
    assert res.metrics["discriminator_auc"] != full.metrics["discriminator_auc"]  # ... the measures read 60
    assert res.metrics["validity.time_order"] == full.metrics["validity.time_order"]  # validity reads all
