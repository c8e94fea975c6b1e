"""Privacy gates by simulation: a generator that copies nothing passes, a copier fails.

Training, holdout and "synthetic" patients are drawn independently from one simulated
population (`tests/simulated.py`): that synthetic set copies nothing. The copier emits 20% of
its patients as training patients with every number moved by 1% of its standard deviation.
Each of 40 draws is judged by the privacy gates alone (their defaults); the gates must let the
fair generator through in at least 95% of draws and stop the copier in at least 95%.
"""

import numpy as np
import pytest
from simulated import copier, population, schema

from diffusion.config import GateConfig
from evaluation.data import tidy
from evaluation.gates import check
from evaluation.privacy import privacy

DRAWS = 40


def privacy_gates_pass(train, syn, holdout, seed: int) -> tuple[bool, dict[str, float]]:
    sch = schema()
    m = privacy(tidy(train, sch), tidy(syn, sch), tidy(holdout, sch), sch, seed=seed)
    gates = [g for g in check(m, GateConfig(), has_holdout=True) if g.name.startswith("privacy.")]
    assert len(gates) == 4 and all(g.evaluated for g in gates)
    return all(g.passed for g in gates), m


@pytest.fixture(scope="module")
def draws():
    out = {"fair": [], "copier": []}
    for d in range(DRAWS):
        train = population(100, seed=3 * d)
        holdout = population(40, seed=3 * d + 1, first_id=100_000)
        fresh = population(140, seed=3 * d + 2, first_id=200_000)
        out["fair"].append(privacy_gates_pass(train, fresh, holdout, d))
        out["copier"].append(privacy_gates_pass(train, copier(train, fresh, 0.2, 0.01, seed=d), holdout, d))
    return out


@pytest.mark.slow
def test_a_generator_that_copies_nothing_passes_at_least_95_percent(draws):
    passed = sum(ok for ok, _ in draws["fair"])
    assert passed >= 0.95 * DRAWS, passed
    # the point estimates sit at their fair values
    assert np.mean([m["privacy.dcr_share"] for _, m in draws["fair"]]) == pytest.approx(0.5, abs=0.05)
    assert np.mean([m["privacy.near_copy_share"] for _, m in draws["fair"]]) < 0.1


@pytest.mark.slow
def test_a_generator_that_copies_20_percent_with_jitter_fails_at_least_95_percent(draws):
    failed = sum(not ok for ok, _ in draws["copier"])
    assert failed >= 0.95 * DRAWS, failed
    assert np.mean([m["privacy.near_copy_share"] for _, m in draws["copier"]]) > 0.2


def test_intervals_hold_their_point_estimates():
    train, holdout = population(60, seed=1), population(30, seed=2, first_id=10_000)
    sch = schema()
    m = privacy(tidy(train, sch), tidy(population(80, seed=3, first_id=20_000), sch), tidy(holdout, sch), sch, seed=0)
    for name in ("privacy.dcr_share", "privacy.mia_auc", "privacy.near_copy_share"):
        assert m[f"{name}.ci_low"] <= m[name] <= m[f"{name}.ci_high"], name
        assert m[f"{name}.ci_high"] - m[f"{name}.ci_low"] > 0.01, name  # an interval, not a point


def test_exact_copies_are_counted_at_the_recorded_precision():
    """A copy whose numbers moved less than the extract's recorded precision is an exact copy."""
    sch = schema()
    train, holdout = population(30, seed=4), population(20, seed=5, first_id=10_000)
    syn = train[train["pid"] < 5].copy()
    syn["hb"] = syn["hb"] + 0.004  # hb is recorded at 0.1
    syn["pid"] += 50_000
    m = privacy(tidy(train, sch), tidy(syn, sch), tidy(holdout, sch), sch, seed=0, bootstrap=20)
    assert m["privacy.exact_copies"] == 5
    syn["hb"] = syn["hb"] + 0.3  # a real change: no longer a copy
    m = privacy(tidy(train, sch), tidy(syn, sch), tidy(holdout, sch), sch, seed=0, bootstrap=20)
    assert m["privacy.exact_copies"] == 0
