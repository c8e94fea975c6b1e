"""Data-parallel training: torchrun with 2 CPU processes (gloo) against the single-process fit."""

import dataclasses

import pandas as pd
import pytest
from conftest import DEMO_DATA, DEMO_SCHEMA

from diffusion.config import Config, ConfigError
from diffusion.data import split_patients
from diffusion.distributed import launch
from diffusion.fit import fit
from diffusion.schema import Schema

SMALL = [
    "train.max_steps=100",
    "train.eval_every=25",
    "train.warmup_steps=10",
    "diffusion.steps=50",
    "sampling.steps=5",
    "model.base_channels=16",
    "model.time_embed_dim=16",
    "train.memorisation_patients=16",
    "encoding.calibrate=false",
]


@pytest.mark.slow
def test_two_processes_train_like_one_and_save_a_folder_that_loads_the_same(tmp_path):
    cfg = Config().with_overrides([*SMALL, "train.processes=2"])
    model, result = launch(DEMO_DATA, DEMO_SCHEMA, cfg, checkpoints=tmp_path / "ckpt")
    assert result.processes == 2 and result.replicas_agree is True  # the gradients were averaged
    losses = [h["val_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]  # the loss falls
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()  # rank 0 checkpointed

    # the same extract and config in one process
    df = pd.read_csv(DEMO_DATA)
    schema = Schema.load(DEMO_SCHEMA)
    train, _ = split_patients(df, schema.id, cfg.pipeline.holdout_fraction, cfg.pipeline.seed, cfg.pipeline.min_holdout_patients)
    single, one = fit(train, schema, cfg.with_overrides(["train.processes=1"]), real_ids=df[schema.id], progress=False)
    assert one.processes == 1 and one.replicas_agree is None
    assert abs(losses[-1] - one.history[-1]["val_loss"]) < 0.25 * one.history[-1]["val_loss"]
    assert model.meta["patients"] == single.meta["patients"] and model.encoder.channel_names == single.encoder.channel_names
    assert dataclasses.replace(model.config.train, processes=1) == single.config.train
    assert model.net.state_dict().keys() == single.net.state_dict().keys()

    saved = model.save(tmp_path / "model")  # the folder round-trips like any other
    from diffusion.bundle import HealthGymModel

    a, b = HealthGymModel.load(saved).sample(30, seed=3), single.sample(30, seed=3)
    assert list(a.columns) == list(b.columns) and (a.dtypes == b.dtypes).all()
    assert a[schema.id].nunique() == 30 and not a[schema.id].isin(df[schema.id]).any()


def test_dp_training_refuses_several_processes():
    with pytest.raises(ConfigError, match="train.processes=1"):
        Config().with_overrides(["train.dp=true", "train.processes=2"])
