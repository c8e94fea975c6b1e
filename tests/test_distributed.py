"""Data-parallel training: torchrun with 2 CPU processes (gloo) against the single-process fit."""

import dataclasses
import socket

import pandas as pd
import pytest
import torch
from conftest import DEMO_DATA, DEMO_SCHEMA

from diffusion.bundle.fit import fit
from diffusion.config import Config, ConfigError
from diffusion.data.schema import Schema
from diffusion.data.split import split_patients
from tasks.torchrun import launch

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
    # the same global batch: the same loss, within the noise of other batches (a network trained
    # without its self-conditioning input, say, ends well above it)
    assert abs(losses[-1] - one.history[-1]["val_loss"]) < 0.05 * one.history[-1]["val_loss"], (losses, one.history)
    assert model.meta.patients == single.meta.patients and model.encoder.channel_names == single.encoder.channel_names
    assert dataclasses.replace(model.config.train, processes=1) == single.config.train
    assert model.net.state_dict().keys() == single.net.state_dict().keys()

    saved = model.save(tmp_path / "model")  # the folder round-trips like any other
    from diffusion.bundle.folder import HealthGymModel

    a, b = HealthGymModel.load(saved).sample(30, seed=3), single.sample(30, seed=3)
    assert list(a.columns) == list(b.columns) and (a.dtypes == b.dtypes).all()
    assert a[schema.id].nunique() == 30 and not a[schema.id].isin(df[schema.id]).any()


def test_dp_training_refuses_several_processes():
    with pytest.raises(ConfigError, match="train.processes=1"):
        Config().with_overrides(["train.dp=true", "train.processes=2"])


def test_a_group_of_one_trains_exactly_like_no_group():
    """DDP around the network changes nothing but the gradient averaging: in a group of one the
    losses are those of plain training (the loss reads the network's attributes through DDP)."""
    from test_training import ar1_cohort

    df, schema = ar1_cohort(n=48, length=6)
    cfg = Config().with_overrides([*SMALL, "train.max_steps=20", "train.eval_every=10", "train.memorisation_patients=0"])
    _, plain = fit(df, schema, cfg, progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        _, grouped = fit(df, schema, cfg, progress=False)
    finally:
        torch.distributed.destroy_process_group()
    assert [h["val_loss"] for h in grouped.history] == pytest.approx([h["val_loss"] for h in plain.history], rel=1e-5)
