"""The detector battery catches planted defects that a second draw of real patients does not show.

Starting from real-like patients (`tests/defects.py`), each defect breaks one kind of structure
(visit order, label persistence, within-patient variance, a fixed per-visit rise, the link of a
static column to the trajectory). The battery's AUC against a holdout must lie clearly above the
real-vs-real floor for each, while a second draw of real patients stays near 0.5.
"""

import numpy as np
import pytest
from defects import DEFECTS, SCHEMA, population

from diffusion.config import EvaluationConfig
from diffusion.data.schema import Schema
from evaluation.data import tidy
from evaluation.detection import battery

N = 200
CFG = EvaluationConfig()


def _battery(holdout, other, schema):
    return battery(holdout, other, schema, CFG)


@pytest.fixture(scope="module")
def setting():
    schema = Schema.from_dict(SCHEMA)
    holdout = tidy(population(N, seed=1), schema)
    floor = _battery(holdout, tidy(population(N, seed=2), schema), schema)
    return schema, holdout, floor


def test_a_second_draw_of_real_patients_is_not_caught(setting):
    _, _, floor = setting
    assert set(floor) == {"discriminator_auc", "discriminator_auc.features", "discriminator_auc.sequence"}
    assert floor["discriminator_auc"] == max(floor["discriminator_auc.features"], floor["discriminator_auc.sequence"])
    assert floor["discriminator_auc"] < 0.6, floor


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_every_planted_defect_is_caught(setting, defect):
    schema, holdout, floor = setting
    broken = DEFECTS[defect](population(N, seed=3), np.random.default_rng(4))
    found = _battery(holdout, tidy(broken, schema), schema)
    assert found["discriminator_auc"] >= floor["discriminator_auc"] + 0.15, (defect, found, floor)


def test_the_evaluation_reports_each_member_beside_its_floor():
    from evaluation import evaluate

    schema = Schema.from_dict(SCHEMA)
    result = evaluate(population(80, 5), population(80, 6), schema, holdout=population(80, 7))
    for k in ("discriminator_auc", "discriminator_auc.features", "discriminator_auc.sequence"):
        assert k in result.metrics and k in result.calibration
    assert result.metrics["discriminator_auc"] == max(
        result.metrics["discriminator_auc.features"], result.metrics["discriminator_auc.sequence"]
    )
