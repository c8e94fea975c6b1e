"""Conditional sampling and rebalancing (diffusion.bundle.conditional), and the subgroup coverage measure."""

import numpy as np
import pandas as pd
import pytest
from simulated import population, schema

from diffusion.bundle.conditional import ConditionError, parse, parse_boost, sample_boosted, sample_where
from diffusion.bundle.fit import fit
from diffusion.config import Config, EvaluationConfig
from evaluation import evaluate
from evaluation.coverage import share_ratio

QUICK = {
    "train.max_steps": 300,
    "train.eval_every": 100,
    "diffusion.steps": 100,
    "sampling.steps": 20,
    "model.base_channels": 16,
    "model.time_embed_dim": 16,
    "train.memorisation_patients": 32,
    "encoding.calibration_patients": 256,
}


@pytest.fixture(scope="module")
def model():
    cfg = Config().with_overrides(QUICK)
    m, _ = fit(population(150, seed=0), schema(), cfg, progress=False)
    return m


def per_patient(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates("pid")


def test_where_returns_exactly_n_patients_each_meeting_the_condition(model):
    for where in ("sex == 'm'", "sex == 'f' and age > 60", "age <= 50 or sex == 'm'"):
        out = sample_where(model, 40, where, seed=1)
        p = per_patient(out)
        assert len(p) == 40 and out["pid"].nunique() == 40, where
        assert p.eval(where).all(), where
        assert (out.groupby("pid")["sex"].nunique() == 1).all() and (out.groupby("pid")["day"].diff().dropna() > 0).all()


def test_label_equalities_are_inpainted_and_spellings_agree(model):
    cond = parse("sex == 'm' and age > 60", model)
    assert cond.fixed == {"sex": "m"}
    assert parse("sex in ['m']", model).fixed == {}  # filtered, not inpainted
    same = [per_patient(sample_where(model, 20, w, seed=3))["sex"].unique().tolist() for w in ("sex == 'm'", "'m' == sex")]
    assert same == [["m"], ["m"]]


@pytest.mark.parametrize(
    "where,message",
    [
        ("alb > 3", "not static column"),
        ("height > 3", "not static column"),
        ("sex == 'x'", "no category"),
        ("sex ==", "not a valid expression"),
    ],
)
def test_bad_conditions_are_refused_clearly(model, where, message):
    with pytest.raises(ConditionError, match=message):
        sample_where(model, 5, where)


def test_a_condition_no_patient_meets_is_refused_not_sampled_for_ever(model):
    with pytest.raises(ConditionError, match="Fewer than"):
        sample_where(model, 5, "age > 1000")


def test_boost_raises_a_subgroups_share_by_its_odds(model):
    plain = per_patient(model.sample(400, seed=5))["sex"].eq("m").mean()
    boosted = sample_boosted(model, 400, {("sex", "m"): 3.0}, seed=5)
    share = per_patient(boosted)["sex"].eq("m").mean()
    odds = 3 * plain / (1 - plain)
    assert boosted["pid"].nunique() == 400
    assert abs(share - odds / (1 + odds)) < 0.12 and share > plain + 0.1
    assert parse_boost("stage=4:2.5") == (("stage", "4"), 2.5)
    with pytest.raises(ConditionError):
        parse_boost("stage:2")


def test_share_ratio_interval_covers_one_for_equal_shares_and_not_for_a_missing_group():
    ratio, lo, hi = share_ratio(30, 300, 30, 300)
    assert lo < 1 < hi and abs(ratio - 1) < 1e-9
    _, lo, hi = share_ratio(60, 300, 0, 300)
    assert hi < 0.8


def test_coverage_gate_blocks_a_collapsed_subgroup_and_passes_a_fair_generator():
    sch = schema()
    train, holdout, fresh = (
        population(200, seed=1),
        population(80, seed=2, first_id=10_000),
        population(200, seed=3, first_id=20_000),
    )
    cfg = EvaluationConfig()
    fair = evaluate(train, fresh, sch, holdout=holdout, config=cfg)
    assert fair.metrics["coverage.outside"] == 0.0
    assert 0.7 < fair.metrics["coverage.share_ratio.sex:m"] < 1.4
    collapsed = fresh.copy()
    collapsed["sex"] = "f"  # every synthetic patient a woman: the men's subgroup is gone
    res = evaluate(train, collapsed, sch, holdout=holdout, config=cfg)
    assert res.metrics["coverage.outside"] > 0.5
    gate = next(g for g in res.gates if g.name == "coverage.outside")
    assert not gate.passed and not res.passed
    assert np.isfinite(res.metrics["coverage.min_ratio"]) and res.metrics["coverage.min_ratio"] < 0.1


def test_the_python_api_fits_samples_a_subgroup_saves_and_loads(tmp_path):
    from test_dates import SCHEMA as CLINIC
    from test_dates import clinic

    from flows.api import HealthGym

    real = clinic(80)
    hg = HealthGym(CLINIC, overrides=QUICK).fit(real, progress=False)
    syn = hg.sample(30, where="dx == 'I10' and birth_date < '1970-01-01'", seed=2)
    p = syn.drop_duplicates("mrn")
    assert len(p) == 30 and (p["dx"] == "I10").all() and (p["birth_date"] < "1970-01-01").all()
    assert list(syn.columns) == list(real.columns) and not set(syn["mrn"]) & set(real["mrn"])
    hg.save(tmp_path / "model")
    again = HealthGym.load(tmp_path / "model")
    pd.testing.assert_frame_equal(again.sample(10, seed=4), hg.sample(10, seed=4))
    report = hg.evaluate(real, hg.sample(80, seed=5))
    assert "discriminator_auc" in report.metrics
    with pytest.raises(Exception, match="before sampling"):
        HealthGym(CLINIC).sample(3)
