"""Training: a known process is learned, runs resume from checkpoints, the best checkpoint is kept."""

import numpy as np
import pandas as pd
import pytest
import torch

from diffusion.bundle.fit import fit
from diffusion.config import Config
from diffusion.data.schema import Schema
from diffusion.training.buckets import LengthBuckets
from diffusion.training.checkpoint import CHECKPOINT


def ar1_cohort(n: int = 256, length: int = 12, phi: float = 0.8, seed: int = 0) -> tuple[pd.DataFrame, Schema]:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, length))
    x[:, 0] = rng.normal(size=n)
    for k in range(1, length):
        x[:, k] = phi * x[:, k - 1] + np.sqrt(1 - phi**2) * rng.normal(size=n)
    df = pd.DataFrame({"pid": np.repeat(np.arange(n), length), "step": np.tile(np.arange(length), n), "v": x.ravel()})
    schema = Schema.from_dict(
        {
            "name": "ar1",
            "id": "pid",
            "time": "step",
            "regular": True,
            "max_length": length,
            "columns": {"v": {"type": "real", "transform": "none"}},
        }
    )
    return df, schema


def lag1(df: pd.DataFrame) -> float:
    prev = df.groupby("pid")["v"].shift(1)
    ok = prev.notna()
    return float(np.corrcoef(df["v"][ok], prev[ok])[0, 1])


SMALL = [
    "model.base_channels=32",
    "model.time_embed_dim=32",
    "diffusion.steps=200",
    "sampling.steps=50",
    "train.batch_size=128",
    "train.eval_every=100",
    "train.warmup_steps=50",
    "train.learning_rate=0.002",
    "train.threads=1",
    "train.memorisation_patients=32",
]


@pytest.mark.slow
def test_a_known_ar1_process_is_recovered():
    df, schema = ar1_cohort()
    # the network alone, no decoding calibration: calibration would fit the lag-1 it is judged on
    cfg = Config().with_overrides(SMALL + ["train.max_steps=600", "encoding.calibrate=false"])
    model, result = fit(df, schema, cfg, progress=False)
    syn = model.sample(256, seed=1)
    assert (syn.groupby("pid").size() == 12).mean() > 0.9
    assert abs(lag1(syn) - lag1(df)) < 0.1, (lag1(syn), lag1(df))
    assert abs(syn["v"].std() - df["v"].std()) < 0.2


@pytest.mark.slow
def test_tokens_of_several_visits_still_learn_the_visit_to_visit_process():
    """A 48-visit cohort gets two visits per token (auto), saved resolved; the lag-1 across and
    within tokens is still learned."""
    df, schema = ar1_cohort(n=192, length=48)
    cfg = Config().with_overrides(SMALL + ["train.max_steps=600", "encoding.calibrate=false"])
    model, _ = fit(df, schema, cfg, progress=False)
    assert model.config.model.patch == 2 and model.net.patch == 2
    syn = model.sample(192, seed=1)
    v = syn.pivot(index="pid", columns="step", values="v").to_numpy()
    across, within = v[:, 2::2], v[:, 1::2]  # a visit after a token's edge / after its token-mate
    for after, before in ((across, v[:, 1:-1:2]), (within, v[:, 0::2])):
        r = np.corrcoef(after.ravel(), before[:, : after.shape[1]].ravel())[0, 1]
        assert abs(r - lag1(df)) < 0.1, (r, lag1(df))


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, kind):
    df, schema = ar1_cohort(n=32, length=5)
    base = SMALL + [
        f"model.kind={kind}",
        "model.base_channels=8",
        "model.time_embed_dim=8",
        "train.batch_size=16",
        "train.eval_every=5",
        "train.checkpoint_every=10",
    ]
    cfg = Config().with_overrides(base + ["train.max_steps=30"])

    class Killed(Exception):
        pass

    def kill_at_20(event, payload):
        if event == "checkpoint" and payload["step"] == 20:
            raise Killed

    with pytest.raises(Killed):  # the "killed" run: dies right after its step-20 checkpoint
        fit(df, schema, cfg, workdir=tmp_path, progress=False, callback=kill_at_20)
    assert (tmp_path / CHECKPOINT).exists()
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["step"] == 20
    # the same run again, allowed 30 steps: it continues from step 20, not from 0
    _, resumed = fit(df, schema, cfg, workdir=tmp_path, progress=False)
    assert resumed.resumed_from == 20 and resumed.steps == 30
    assert [h["step"] for h in resumed.history][:4] == [5, 10, 15, 20]
    # and the resumed run ends where an uninterrupted one ends
    _, straight = fit(df, schema, cfg, workdir=tmp_path / "fresh", progress=False)
    assert straight.history[-1]["val_loss"] == pytest.approx(resumed.history[-1]["val_loss"], rel=1e-4)


def test_time_budget_stops_training_and_keeps_the_best_checkpoint():
    df, schema = ar1_cohort(n=32, length=5)
    cfg = Config().with_overrides(
        SMALL
        + [
            "model.base_channels=8",
            "model.time_embed_dim=8",
            "train.max_steps=100000",
            "train.max_minutes=0.05",
            "train.eval_every=5",
            "train.max_epochs=100000",
            "train.patience=0",
        ]
    )
    model, result = fit(df, schema, cfg, progress=False)
    assert result.stopped_by == "time" and result.steps < 100000
    vals = [h["val_loss"] for h in result.history]
    assert result.best_val_loss == min(vals)
    assert result.best_step == result.history[int(np.argmin(vals))]["step"]
    # a cohort of numbers only (no missing values, no categories) still gets its decoding calibrated
    assert set(model.meta.calibration["marginals"]) == {"v"}
    assert model.encoder.decoding.number("v").generated_quantiles is not None


def test_dp_training_spends_at_most_its_budget_and_keeps_the_final_weights():
    df, schema = ar1_cohort(n=64, length=5)
    cfg = Config().with_overrides(
        SMALL
        + [
            "model.base_channels=8",
            "model.time_embed_dim=8",
            "train.max_steps=40",
            "train.batch_size=16",
            "train.eval_every=10",
            "train.dp=true",
            "train.dp_epsilon=5",
            "encoding.calibrate=false",
        ]
    )
    model, result = fit(df, schema, cfg, progress=False)
    assert result.steps == 40 and result.stopped_by == "max_steps"
    assert 0.5 * 5 < result.dp_epsilon <= 5.0 and result.dp_noise_multiplier > 0
    assert result.best_step == 40  # the final weights: no choice of checkpoint by patients' data
    assert all("train_dcr_share" not in h for h in result.history)  # nothing probed under DP
    assert len(model.sample(8, seed=0)) > 0


def test_memorisation_signal_is_recorded_and_early_stopping_ends_training():
    df, schema = ar1_cohort(n=64, length=5)
    cfg = Config().with_overrides(
        SMALL
        + [
            "model.base_channels=8",
            "model.time_embed_dim=8",
            "train.max_steps=100000",
            "train.max_epochs=100000",
            "train.eval_every=10",
            "train.patience=2",
            "train.memorisation_patients=16",
            "train.memorisation_sampling_steps=5",
            "train.learning_rate=0.05",
            "encoding.calibrate=false",
            "train.max_minutes=2",
        ]
    )
    _, result = fit(df, schema, cfg, progress=False)
    assert result.stopped_by == "patience", result.stopped_by
    assert all("train_dcr_share" in h for h in result.history)  # every check measured it
    assert result.best_dcr_share in {h["train_dcr_share"] for h in result.history}


def test_the_memorisation_probe_tells_copies_from_fresh_patients():
    """The probe's share is about 0.5 for generated patients drawn like fresh ones and near 1 for
    copies of training patients, so a signal that could not move would fail here."""
    from diffusion.encoding import Encoded
    from diffusion.training.memorisation import MemorisationProbe

    rng = np.random.default_rng(0)

    def cohort(n: int) -> Encoded:
        x = rng.normal(size=(n, 3, 6)).astype(np.float32)
        return Encoded(x, np.ones_like(x), np.full(n, 6))

    # as many validation as training patients, so each random training set holds every copy's source
    train, validation, fresh = cohort(80), cohort(80), cohort(64)
    copies = train.x[rng.choice(80, 64, replace=False)] + 0.01 * rng.normal(size=(64, 3, 6))
    fair = MemorisationProbe(lambda net, n, seed: (fresh.x[:n], fresh.lengths[:n]), train, validation, patients=64)
    copying = MemorisationProbe(lambda net, n, seed: (copies[:n], np.full(n, 6)), train, validation, patients=64)
    assert abs(fair(None) - 0.5) < 0.12
    assert copying(None) > 0.95


def test_the_memorisation_probe_samples_with_the_release_sampler(monkeypatch):
    from diffusion.bundle.folder import HealthGymModel

    calls = []
    real = HealthGymModel.sample_tensor

    def recording(self, n, **kw):
        calls.append(kw)
        return real(self, n, **kw)

    monkeypatch.setattr(HealthGymModel, "sample_tensor", recording)
    df, schema = ar1_cohort(n=48, length=5)
    over = ["model.base_channels=8", "model.time_embed_dim=8", "train.max_steps=20", "train.eval_every=10"]
    over += ["train.memorisation_patients=8", "encoding.calibrate=false", "train.threads=1"]
    fit(df, schema, Config().with_overrides(over), progress=False)
    assert calls and all(kw.get("method") is None and kw.get("steps") is None for kw in calls)  # the model's sampling.*
    calls.clear()
    fit(df, schema, Config().with_overrides(over + ["train.memorisation_sampling_steps=3"]), progress=False)
    assert calls and all(kw.get("steps") == 3 for kw in calls)


def test_the_plan_caps_passes_over_small_cohorts_and_the_same_seed_reproduces():
    from diffusion.training.loop import StopReason, plan_reason, planned_steps

    cfg = Config().with_overrides(["train.max_epochs=100", "train.batch_size=64", "train.min_steps=0"]).train
    assert planned_steps(cfg, 32) == 100 and planned_steps(cfg, 6400) == 10000
    assert plan_reason(cfg, 32) == StopReason.MAX_EPOCHS
    # passes count per 20 visits of the median patient: 66-visit patients take three times as many
    assert planned_steps(cfg, 32, median_visits=19) == 100 and planned_steps(cfg, 32, median_visits=66) == 300
    assert plan_reason(cfg, 32, median_visits=66) == StopReason.MAX_EPOCHS
    # a floor of steps lifts a small cohort's plan above its passes, never above max_steps
    floored = Config().with_overrides(["train.max_epochs=100", "train.batch_size=64", "train.min_steps=500"]).train
    assert planned_steps(floored, 32) == 500 and plan_reason(floored, 32) == StopReason.MIN_STEPS
    assert planned_steps(floored, 6400) == 10000 and plan_reason(floored, 6400) == StopReason.MAX_EPOCHS
    capped = Config().with_overrides(["train.min_steps=500", "train.max_steps=300"]).train
    assert planned_steps(capped, 32) == 300 and plan_reason(capped, 32) == StopReason.MAX_STEPS
    df, schema = ar1_cohort(n=48, length=5)
    over = SMALL + [
        "model.base_channels=8",
        "model.time_embed_dim=8",
        "train.max_steps=30",
        "train.eval_every=10",
        "train.memorisation_patients=8",
        "train.memorisation_sampling_steps=3",
        "encoding.calibrate=false",
    ]
    a, ra = fit(df, schema, Config().with_overrides(over), progress=False)
    b, rb = fit(df, schema, Config().with_overrides(over), progress=False)
    assert ra.history == rb.history
    assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))


def test_length_buckets_draw_every_patient_once_per_epoch_in_batches_of_similar_length():
    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    buckets = LengthBuckets(lengths, batch=32, seed=3)
    epoch = [buckets.indices(s) for s in range(buckets.per_epoch)]
    assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    assert min(len(b) for b in epoch) >= 30  # equal splits: no remainder batch of a patient or two
    spread = np.mean([np.ptp(lengths[b]) for b in epoch])
    random = np.mean([np.ptp(lengths[np.random.default_rng(i).choice(1000, 32)]) for i in range(50)])
    assert spread < 0.3 * random  # cut to its longest patient, a batch carries little padding
    again = LengthBuckets(lengths, batch=32, seed=3)  # a resumed run: step 40's batch without steps 0-39
    assert np.array_equal(again.indices(40), buckets.indices(40))
    assert not np.array_equal(buckets.indices(buckets.per_epoch), epoch[0])  # the next epoch is shuffled anew
