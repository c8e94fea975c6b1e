"""The champion rule (`evaluation.champion.decide`, `evaluation.catalog.better`) as pure functions."""

from evaluation.catalog import better
from evaluation.champion import decide


def test_better_follows_each_measures_direction():
    assert better(0.6, 0.7, "discriminator_auc") and not better(0.7, 0.6, "discriminator_auc")  # lower is better
    assert better(0.9, 0.8, "fidelity.quality_score") and not better(0.8, 0.9, "fidelity.quality_score")
    assert better(0.52, 0.60, "privacy.mia_auc") and better(0.48, 0.40, "privacy.mia_auc")  # nearest 0.5
    assert not better(0.40, 0.55, "privacy.dcr_share")
    assert better(0.1, 0.2, "temporal.lag1_abs_diff.bili")  # a per-column metric takes its family's direction
    assert not better(0.5, 0.5, "discriminator_auc")  # a tie keeps the champion


def test_a_challenger_that_failed_a_gate_is_never_promoted():
    promoted, why = decide(0.51, False, "discriminator_auc", None)
    assert not promoted and "gate failed" in why


def test_the_first_passing_model_is_promoted_and_then_only_a_better_one():
    assert decide(0.8, True, "discriminator_auc", None)[0]
    promoted, why = decide(0.7, True, "discriminator_auc", ("3", 0.75))
    assert promoted and "beats champion v3" in why
    promoted, why = decide(0.8, True, "discriminator_auc", ("3", 0.75))
    assert not promoted and "does not beat champion v3" in why
    assert decide(0.95, True, "fidelity.quality_score", ("2", 0.9))[0]
    assert not decide(0.85, True, "fidelity.quality_score", ("2", 0.9))[0]


def test_a_missing_primary_metric_blocks_and_a_champion_without_one_is_replaced():
    promoted, why = decide(None, True, "discriminator_auc", ("1", 0.7))
    assert not promoted and "missing" in why
    assert decide(0.9, True, "discriminator_auc", ("1", None))[0]


def test_a_primary_metric_the_catalog_does_not_know_is_refused_before_anything_trains():
    import dataclasses

    import pytest

    from diffusion.config import ConfigError, EvaluationConfig
    from evaluation.core import check_config

    with pytest.raises(ValueError, match="not a measure of the catalog"):
        better(0.1, 0.2, "no.such.measure")  # no silent "lower is better"
    with pytest.raises(ConfigError, match="primary_metric 'no.such.measure'"):
        check_config(dataclasses.replace(EvaluationConfig(), primary_metric="no.such.measure"))
    check_config(EvaluationConfig())  # the default is known


def test_the_plumbing_settings_name_real_gates():
    import dataclasses

    from plumbing import OPEN_GATES

    from diffusion.config import GateConfig

    fields = {f.name for f in dataclasses.fields(GateConfig)}
    assert {k.removeprefix("evaluation.gates.") for k in OPEN_GATES} <= fields
