"""Every measure survives degenerate inputs: what cannot be computed is reported, never raised."""

import numpy as np
import pandas as pd
import pytest

from diffusion.config import EvaluationConfig
from diffusion.data.schema import Schema
from evaluation import evaluate
from evaluation.data import tidy
from evaluation.detection import discriminator_auc

SCHEMA = {
    "name": "deg",
    "id": "pid",
    "time": "t",
    "regular": False,
    "max_length": 6,
    "columns": {
        "site": {"type": "categorical", "static": True, "categories": ["only"]},  # a single category
        "age": {"type": "real", "static": True, "min": 0, "max": 120},
        "lab": {"type": "real", "nullable": True},
        "flat": {"type": "real"},  # constant everywhere
        "rare": {"type": "real", "nullable": True},  # missing for every patient
        "grade": {"type": "categorical", "categories": ["a", "b", "lone"]},  # one label held by one patient
    },
}


def cohort(n: int, seed: int, single: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        visits = 1 if single and rng.random() < 0.85 else int(rng.integers(2, 6))
        for k in range(visits):
            rows.append(
                {
                    "pid": seed * 10_000 + p,
                    "t": float(10 * k),
                    "site": "only",
                    "age": float(30 + p % 40),
                    "lab": np.nan if rng.random() < 0.5 else float(rng.normal(5, 1)),
                    "flat": 1.0,
                    "rare": np.nan,
                    "grade": "lone" if p == 0 else str(rng.choice(["a", "b"])),
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [2, 3, 60])
def test_evaluation_of_one_visit_patients_with_empty_and_constant_columns_does_not_raise(n):
    schema = Schema.from_dict(SCHEMA)
    real, syn, holdout = cohort(n, 1), cohort(n, 2), cohort(max(n, 2), 3)
    result = evaluate(real, syn, schema, holdout=holdout, config=EvaluationConfig())
    assert "discriminator_auc" in result.metrics or "discriminator_auc" in result.unmeasured
    for gate in result.gates:
        if not gate.evaluated and "not measurable" in gate.note:
            assert not gate.passed  # a gate whose measure failed blocks, with its reason


def test_a_feature_missing_for_every_patient_of_a_fold_is_dropped_by_that_fold():
    """The crash of issue 25: histogram boosting refused a feature with no value in a training
    fold. A lab present only in a few synthetic patients must not break detection."""
    schema = Schema.from_dict(SCHEMA)
    real, syn = cohort(40, 1), cohort(40, 2)
    syn.loc[syn.index[:2], "rare"] = 3.0  # two synthetic visits hold the lab nobody else has
    auc = discriminator_auc(tidy(real, schema), tidy(syn, schema), schema, seed=0, folds=5)
    assert 0.0 <= auc <= 1.0


def test_a_measure_that_fails_is_reported_with_its_reason_and_blocks_its_gate(monkeypatch, tmp_path):
    from evaluation import core

    def broken(*args, **kwargs):
        raise ValueError("window shape cannot be larger than input array shape (value 12.5 of 'x')")

    monkeypatch.setattr(core.detection, "battery", broken)
    schema = Schema.from_dict(SCHEMA)
    result = evaluate(cohort(60, 1), cohort(60, 2), schema, holdout=cohort(60, 3), out_dir=tmp_path)
    assert "discriminator_auc" not in result.metrics
    why = result.unmeasured["discriminator_auc"]
    assert why.startswith("ValueError: window shape") and "12.5" not in why and "'x'" not in why  # values masked
    gate = next(g for g in result.gates if g.name == "discriminator_auc")
    assert not gate.passed and not gate.evaluated and "window shape" in gate.note
    assert not result.passed and "not measurable" in result.failed_gates_message()
    report = (tmp_path / "report.html").read_text()
    assert "Not measurable" in report and "window shape" in report
    import json

    assert "discriminator_auc" in json.loads((tmp_path / "metrics.json").read_text())["not_measurable"]
