"""The diffusion library: encoder round trip, U-Net shapes, sampler properties, bundle save/load."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from diffusion.bundle.folder import HealthGymModel
from diffusion.config import Config
from diffusion.data.lagstats import stay_grid
from diffusion.data.schema import Schema
from diffusion.encoding import TrajectoryEncoder
from diffusion.encoding.marginals import isolation as _isolation
from diffusion.encoding.marginals import smooth as _smooth
from diffusion.encoding.switching import switching_decode as _switching_decode
from diffusion.model.build import build_denoiser
from diffusion.model.discrete import DiscreteHeads
from diffusion.model.sampler import logsnr_steps, respaced_steps, sample_loop
from diffusion.model.schedule import GaussianDiffusion, make_betas
from diffusion.model.unet import Unet1D, build_unet


def mixed_cohort(seed: int = 0, n: int = 40, regular: bool = False) -> tuple[pd.DataFrame, Schema]:
    """Every column type, static and temporal, missing values, lengths 1..7, rows shuffled."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n):
        length = int(rng.integers(1, 8))
        sex = rng.choice(["f", "m"])
        arm = bool(rng.integers(0, 2))
        weight = float(np.round(rng.normal(70, 10), 3))
        t = 0.0 if regular else float(rng.integers(0, 3))
        for k in range(length):
            rows.append(
                {
                    "pid": f"P{pid:03d}",
                    "t": k if regular else t,
                    "sex": sex,
                    "arm": arm,
                    "weight": weight,
                    "lab": None if rng.random() < 0.2 else float(np.round(np.exp(rng.normal(1, 1)), 4)),
                    "count": int(rng.poisson(5)),
                    "flag": None if rng.random() < 0.1 else int(rng.integers(0, 2)),
                    "grade": rng.choice(["a", "b", "c"]),
                }
            )
            t += float(rng.integers(1, 90))
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    schema = Schema.from_dict(
        {
            "name": "mixed",
            "id": "pid",
            "time": "t",
            "regular": regular,
            "max_length": 8,
            "columns": {
                "sex": {"type": "categorical", "static": True, "categories": ["f", "m"]},
                "arm": {"type": "binary", "static": True},
                "weight": {"type": "real", "static": True, "min": 0},
                "lab": {"type": "real", "min": 0, "nullable": True, "transform": "boxcox"},
                "count": {"type": "integer", "min": 0},
                "flag": {"type": "binary", "nullable": True},
                "grade": {"type": "categorical", "categories": ["a", "b", "c"]},
            },
        }
    )
    return df, schema


def assert_same(real: pd.DataFrame, decoded: pd.DataFrame, schema: Schema) -> None:
    ref = real.sort_values([schema.id, schema.time]).reset_index(drop=True)
    assert list(decoded.columns) == list(ref.columns)
    for col in ref.columns:
        if col == schema.id:
            continue
        a, b = ref[col], decoded[col]
        if pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=2e-5, atol=1e-5, err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col


@pytest.mark.parametrize(
    "levels,discrete_scale,deviations,repeat_share",
    [(True, 1.0, "linear", 0.0), (False, 1.0, "linear", 0.0), (True, 0.5, "linear", 0.0), (True, 0.0, "quantile", 0.05)],
)
@pytest.mark.parametrize("regular", [False, True])
def test_encoder_round_trip_is_exact_for_every_type(regular, levels, discrete_scale, deviations, repeat_share):
    df, schema = mixed_cohort(regular=regular)
    enc = TrajectoryEncoder(
        schema, patient_levels=levels, discrete_scale=discrete_scale, deviations=deviations, repeat_share=repeat_share
    ).fit(df)
    assert ("count__same" in enc.channel_names) == (repeat_share > 0)  # a Poisson count repeats often, a lab never
    discrete_scale = enc.state.discrete_scale
    e = enc.encode(df)
    assert e.x.shape == (40, len(enc.channels), 7)
    bounds = np.asarray(enc.clip_bounds)[None, :, None]
    assert (np.abs(e.x) <= bounds + 1e-6).all()
    for i, (_, kind, col) in enumerate(enc.channels):  # discrete codes are exactly -/+ discrete_scale
        if kind in ("onehot", "missing", "repeat") or (kind == "value" and col in ("arm", "flag")):
            assert set(np.unique(e.x[:, i][e.mask[:, i] > 0])) <= {-discrete_scale, discrete_scale}, kind
            assert enc.clip_bounds[i] == discrete_scale
    assert any(kind == "level" for _, kind, _ in enc.channels) == levels
    decoded = enc.decode(e.x)
    assert_same(df, decoded, schema)
    assert decoded["lab"].isna().sum() == df["lab"].isna().sum()


def test_encoder_round_trip_on_pbc(pbc, pbc_schema):
    enc = TrajectoryEncoder(pbc_schema).fit(pbc)
    decoded = enc.decode(enc.encode(pbc).x)
    assert_same(pbc, decoded, pbc_schema)
    assert (decoded.dtypes.values == pbc.dtypes.values).all()


def test_padding_never_reaches_the_output():
    df, schema = mixed_cohort()
    enc = TrajectoryEncoder(schema).fit(df)
    e = enc.encode(df)
    x = e.x.copy()
    valid = x[:, 0, :] > 0
    temporal = [
        i for i, (_, kind, col) in enumerate(enc.channels) if i not in enc.static_channels and kind not in ("valid", "length")
    ]
    for i in temporal:  # garbage in the padded region
        x[:, i, :] = np.where(valid, x[:, i, :], 0.987)
    assert_same(df, enc.decode(x), schema)
    assert (e.mask[:, temporal, :][~np.repeat(valid[:, None, :], len(temporal), axis=1)] == 0).all()


def test_static_columns_are_decoded_once_per_patient():
    df, schema = mixed_cohort()
    enc = TrajectoryEncoder(schema).fit(df)
    x = np.random.default_rng(1).uniform(-1, 1, size=(30, len(enc.channels), enc.length)).astype(np.float32)
    out = enc.decode(x)
    for col in ("sex", "arm", "weight"):
        assert (out.groupby("pid")[col].nunique(dropna=False) == 1).all()
    assert out.groupby("pid")["t"].apply(lambda s: bool(np.all(np.diff(s.to_numpy()) > 0))).all()
    assert set(out["grade"]) <= {"a", "b", "c"} and set(out["sex"]) <= {"f", "m"}
    assert out["count"].between(df["count"].min(), df["count"].max()).all()
    assert (out["count"] == out["count"].round()).all()
    assert (out["lab"].dropna() >= 0).all()
    # reals come out at the precision the extract records them (weight 3 decimals, lab 4)
    for col, d in (("weight", 3), ("lab", 4)):
        v = out[col].dropna().to_numpy(float)
        assert v.size and np.allclose(v, np.round(v, d), rtol=0, atol=1e-9), col
        assert not np.allclose(v, np.round(v, d - 1), rtol=0, atol=1e-9), col


def test_recorded_precision_is_learned_and_old_states_stay_unrounded():
    from diffusion.encoding.numeric import NumberCodec
    from diffusion.encoding.numeric import recorded_decimals as _recorded_decimals

    rng = np.random.default_rng(0)
    assert _recorded_decimals(np.array([261.0, 302.0, 1718.0])) == 0
    assert _recorded_decimals(np.array([10.6, 11.2, 12.0, 0.3])) == 1
    assert _recorded_decimals(np.round(rng.normal(3.5, 0.4, 500), 2)) == 2
    assert _recorded_decimals(rng.normal(58, 10, 500)) is None  # continuous: never rounded
    assert _recorded_decimals(np.array([10.6, 11.25])) == 2  # every value must fit the grid
    codec = NumberCodec.fit(np.array([9.6, 10.6, 17.1, 36.0]), "none", False)
    z = np.linspace(-1, 1, 101)
    out = codec.unscale(z)
    assert codec.decimals == 1 and np.allclose(out, np.round(out, 1), atol=1e-12)
    assert out.min() == 9.6 and out.max() == 36.0
    continuous = codec.replace(decimals=None)  # a continuous column is never rounded
    assert not np.allclose(continuous.unscale(z), np.round(continuous.unscale(z), 1))


def test_long_patients_are_cut_with_a_warning(caplog):
    df, schema = mixed_cohort()
    schema = Schema.from_dict({**schema.to_dict(), "max_length": 3})
    enc = TrajectoryEncoder(schema).fit(df)
    assert "cut" in caplog.text
    assert enc.encode(df).x.shape[-1] == 3


@pytest.mark.parametrize("length", [1, 2, 3, 5, 7, 13, 16])
def test_unet_keeps_odd_lengths(length):
    net = Unet1D(9, base_channels=16, channel_mults=(1, 2, 2), blocks_per_level=1, time_embed_dim=32)
    x = torch.randn(3, 9, length)
    out = net(x, torch.tensor([0, 10, 999]))
    assert out.shape == x.shape


def test_schedules_are_valid():
    for name in ("cosine", "linear"):
        b = make_betas(name, 1000)
        assert b.shape == (1000,) and (b > 0).all() and (b < 1).all()
    d = GaussianDiffusion(steps=100)
    assert d.alphas_cumprod[0] > 0.99 and d.alphas_cumprod[-1] < 0.01
    assert respaced_steps(1000, 50)[0] == 999 and respaced_steps(1000, 50)[-1] == 0 and len(respaced_steps(1000, 50)) == 50


def test_logsnr_spacing_starts_at_the_floor():
    abar = GaussianDiffusion(steps=1000).alphas_cumprod
    logsnr = np.log(abar) - np.log1p(-abar)
    plain = logsnr_steps(abar, 12)
    floored = logsnr_steps(abar, 12, min_logsnr=-6.0)
    assert floored[0] == 999 and floored[-1] == 0 and len(floored) == 12
    # after the opening step every step sits at or above the floor; the plain spacing spends several below it
    assert logsnr[floored[1]] >= -6.05 and sum(logsnr[t] < -6 for t in plain) >= 4
    gaps = np.diff(logsnr[floored[1:]])
    assert gaps.max() < 1.5 * gaps.min()  # even in log-SNR (to the nearest whole step)
    assert logsnr_steps(abar, 12, min_logsnr=-100.0) == plain  # a floor below the schedule's end changes nothing


def tiny_model(overrides: list[str] = (), seed: int = 0, kind: str = "unet") -> HealthGymModel:
    df, schema = mixed_cohort()
    cfg = Config().with_overrides(
        [
            "model.base_channels=16",
            "model.time_embed_dim=16",
            "model.patch=1",
            "diffusion.steps=50",
            "sampling.steps=10",
            f"model.kind={kind}",
            *overrides,
        ]
    )
    enc = TrajectoryEncoder(schema).fit(df)
    torch.manual_seed(seed)
    net = build_denoiser(len(enc.channels), cfg.model)
    for p in net.parameters():  # an untrained but non-trivial network
        torch.nn.init.normal_(p, std=0.05)
    return HealthGymModel(config=cfg, schema=schema, encoder=enc, net=net.eval())


@pytest.mark.parametrize("kind", ["unet", "transformer"])
@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sampled_patients_respect_the_schema(method, kind):
    model = tiny_model(kind=kind)
    out = model.sample(25, seed=3, method=method)
    assert out["pid"].nunique() == 25
    assert (out.groupby("pid")[["sex", "arm", "weight"]].nunique(dropna=False) == 1).all().all()
    assert out.groupby("pid")["t"].apply(lambda s: bool(np.all(np.diff(s.to_numpy()) > 0))).all()
    assert out.groupby("pid").size().max() <= model.encoder.length
    assert set(out["grade"]) <= {"a", "b", "c"}
    assert (out["weight"] >= 0).all() and (out["count"] >= 0).all()


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_saved_model_samples_identically(tmp_path, kind):
    model = tiny_model(kind=kind)
    a = model.sample(12, seed=7)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m")
    loaded = HealthGymModel.load(tmp_path / "m")
    assert loaded.config.model.kind == kind and type(loaded.net) is type(model.net)  # the folder records its engine
    b = loaded.sample(12, seed=7)
    pd.testing.assert_frame_equal(a, b)
    c = loaded.sample(12, seed=8)
    assert not a.equals(c)


def test_sampler_projects_static_channels():
    model = tiny_model()
    x = model.sample_tensor(5, seed=1)
    for ch in model.encoder.static_channels:
        assert np.allclose(x[:, ch, :], x[:, ch, :1], atol=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_x0_and_eps_invert_the_forward_process(prediction):
    d = GaussianDiffusion(steps=1000, prediction=prediction)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, generator=gen), torch.randn(4, 3, 8, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    a = d.abar(t, x0)
    x_t = d.q_sample(x0, t, eps)
    target = eps if prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0
    x0_hat, eps_hat = d.x0_and_eps(target, x_t, a)
    tol = 1e-4 if prediction == "v" else 5e-2  # eps -> x0 divides by sqrt(abar), tiny at t = 999
    torch.testing.assert_close(x0_hat, x0, atol=tol, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=0)

    # the training loss of the exact prediction is zero
    class Exact(torch.nn.Module):
        def forward(self, x, tt):
            return target

    loss = d.training_losses(Exact(), x0, t, torch.ones_like(x0), eps)
    assert float(loss.max()) < 1e-6 and loss.shape == (4,)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize(
    "method,steps,eta",
    [
        ("ddim", 50, 1.0),
        ("ddim", 50, 0.0),
        ("ddpm", 200, 1.0),
        ("dpmpp2m", 10, 0.0),
        ("dpmpp2m-sde", 20, 1.0),
        ("dpmpp2m-sde", 20, 0.5),
    ],
)
def test_sampler_with_the_exact_denoiser_draws_the_data_distribution(prediction, method, steps, eta):
    """Gaussian data has a closed-form denoiser: the sampler must then return that Gaussian, for a
    static channel (one value per patient, broadcast over 16 steps) and an i.i.d. temporal one."""
    mu, sd, length = 0.3, 0.25, 16
    d = GaussianDiffusion(steps=1000, prediction=prediction)
    table = torch.as_tensor(d.alphas_cumprod, dtype=torch.float32)

    class Exact(torch.nn.Module):
        def forward(self, x, t):
            a = table[t].view(-1, 1, 1)
            static = (a.sqrt() * x[:, :1].sum(-1, keepdim=True) / (1 - a) + mu / sd**2) / (length * a / (1 - a) + 1 / sd**2)
            temporal = (a.sqrt() * x[:, 1:] / (1 - a) + mu / sd**2) / (a / (1 - a) + 1 / sd**2)
            x0 = torch.cat([static.expand_as(x[:, :1]), temporal], dim=1)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            return eps if prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0

    out = sample_loop(
        Exact(),
        d,
        (3000, 2, length),
        method=method,
        steps=steps,
        eta=eta,
        generator=torch.Generator().manual_seed(1),
        static_channels=[0],
        clip=[2.0, 2.0],
    )
    static, temporal = out[:, 0, 0], out[:, 1, :].flatten()
    assert abs(float(static.mean()) - mu) < 0.02 and abs(float(static.std()) - sd) < 0.03
    assert abs(float(temporal.mean()) - mu) < 0.02 and abs(float(temporal.std()) - sd) < 0.03


def test_model_folders_saved_before_new_settings_load_with_the_old_ones(tmp_path):
    model = tiny_model(["model.self_condition=false", "model.position=false"])
    folder = model.save(tmp_path / "m")
    raw = json.loads((folder / "config.json").read_text())
    assert raw["diffusion"]["prediction"] == "v"  # the default for new models
    assert HealthGymModel.load(folder).diffusion.prediction == "v"
    assert raw["sampling"]["min_logsnr"] == -6.0
    del raw["diffusion"]["prediction"], raw["model"]["self_condition"], raw["model"]["position"], raw["model"]["kind"]
    del raw["sampling"]["min_logsnr"], raw["model"]["patch"], raw["diffusion"]["discrete"]
    (folder / "config.json").write_text(json.dumps(raw))
    old = HealthGymModel.load(folder)  # its weights hold no position layer: strict loading would fail with one
    assert old.diffusion.prediction == "eps" and old.config.model.self_condition is False and old.config.model.position is False
    assert old.config.model.kind == "unet" and isinstance(old.net, Unet1D)  # saved before the engine was a setting
    assert old.config.sampling.min_logsnr is None  # sampled over the whole log-SNR range, as when it was saved
    assert old.config.model.patch == 1 and old.config.diffusion.discrete == "regression"  # a visit per token, regressed codes


def test_a_self_conditioned_network_sees_its_previous_x0_estimate():
    seen = []

    class Recorder(torch.nn.Module):
        self_condition = True

        def forward(self, x, t, x_self=None):
            seen.append(x_self.clone())
            return 0.3 * x + 0.1

    d = GaussianDiffusion(steps=100, prediction="v")
    sample_loop(Recorder(), d, (2, 3, 5), method="ddim", steps=4, eta=1.0, static_channels=[1], clip=[1.0, 1.0, 2.0])
    assert len(seen) == 4 and float(seen[0].abs().max()) == 0.0  # nothing to show at the first step
    for later in seen[1:]:
        assert float(later.abs().max()) > 0
        assert float(later[:, :2].abs().max()) <= 1.0 and float(later[:, 2].abs().max()) <= 2.0  # clipped estimates
        assert torch.allclose(later[:, 1], later[:, 1, :1].expand(-1, 5))  # static channel projected


def test_self_conditioning_trains_both_with_and_without_a_first_estimate():
    df, schema = mixed_cohort()
    cfg = Config().with_overrides(["model.base_channels=16", "model.time_embed_dim=16"])
    enc = TrajectoryEncoder(schema).fit(df)
    data = enc.encode(df)
    net = build_unet(len(enc.channels), cfg.model)
    assert net.self_condition and net.init.in_channels == 2 * len(enc.channels)
    d = GaussianDiffusion(steps=50, prediction="v")
    x0, mask = torch.from_numpy(data.x[:6]), torch.from_numpy(data.mask[:6])
    t, noise = torch.arange(6) * 8, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with_first = d.training_losses(net, x0, t, mask, noise, torch.ones(6, dtype=torch.bool))
    without = d.training_losses(net, x0, t, mask, noise, torch.zeros(6, dtype=torch.bool))
    mixed = d.training_losses(net, x0, t, mask, noise, torch.tensor([True, False] * 3))
    torch.testing.assert_close(mixed[0::2], with_first[0::2])
    torch.testing.assert_close(mixed[1::2], without[1::2])


def test_auto_discrete_scale_matches_the_numeric_channels():
    df, schema = mixed_cohort()
    enc = TrajectoryEncoder(schema).fit(df)  # discrete_scale 0 = auto
    e = enc.encode(df)
    numeric = [
        i for i, (_, kind, col) in enumerate(enc.channels) if kind in ("level", "gap", "t0") or col in ("weight", "lab", "count")
    ]
    values = np.concatenate([e.x[:, i][e.mask[:, i] > 0] for i in numeric])
    scale = enc.state.discrete_scale
    assert 0.1 <= scale < 1.0 and scale == pytest.approx(float(np.sqrt(np.mean(values**2))), rel=1e-5)
    sex = enc.channel_names.index("sex=f")
    assert set(np.unique(e.x[:, sex])) == {-scale, scale}
    # a regular schema with no numbers (so no gap channel either) keeps +/-1
    df, schema = mixed_cohort(regular=True)
    raw = schema.to_dict()
    only_labels = Schema.from_dict({**raw, "columns": {k: v for k, v in raw["columns"].items() if k in ("sex", "grade", "flag")}})
    assert TrajectoryEncoder(only_labels).fit(df).state.discrete_scale == 1.0


def test_switching_decode_removes_weak_flicker_and_keeps_clear_changes():
    # one patient, two labels; visit scores favour 0 0 1 0 0 1 1 1, the lone 1 only weakly
    margin = np.array([-1.0, -1.0, 0.1, -1.0, -1.0, 1.0, 1.0, 1.0])
    scores = np.stack([-margin, margin])[None]  # [1, 2, 8]
    recorded = np.ones((1, 8), bool)
    assert _switching_decode(scores, recorded, 0.0)[0].tolist() == [0, 0, 1, 0, 0, 1, 1, 1]  # the argmax
    assert _switching_decode(scores, recorded, 0.5)[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert _switching_decode(scores, recorded, 10.0)[0].tolist() == [0] * 8  # never worth a change: the better constant
    recorded[0, 4] = False  # a missing visit neither scores nor breaks the run
    codes = _switching_decode(scores, recorded, 0.5)[0]
    assert codes[[0, 1, 2, 3, 5, 6, 7]].tolist() == [0, 0, 0, 0, 1, 1, 1]
    three = np.random.default_rng(0).normal(size=(50, 3, 6))  # categoricals: penalty 0 is the argmax
    assert (_switching_decode(three, np.ones((50, 6), bool), 0.0) == three.argmax(axis=1)).all()
    assert stay_grid(np.array([[0, 0, 1, 1, 1]]), np.array([[True, True, False, True, True]])) == 1.0  # pairs both recorded


def test_calibrated_persistence_keeps_categories_as_often_as_the_real_patients():
    df, schema = mixed_cohort(n=120)
    rng = np.random.default_rng(3)
    df = df.sort_values(["pid", "t"]).reset_index(drop=True)
    first = df.groupby("pid").cumcount() == 0
    for col, labels in (("grade", np.array(["a", "b", "c"])), ("flag", np.array([0, 1]))):
        draw = pd.Series(np.where(first | (rng.random(len(df)) < 0.1), rng.integers(0, len(labels), len(df)), -1))
        codes = draw.where(draw >= 0).groupby(df["pid"]).ffill().astype(int)  # a label held until it changes
        df[col] = np.where(df[col].isna(), None, labels[codes].astype(object)) if col == "flag" else labels[codes]
    enc = TrajectoryEncoder(schema).fit(df)
    real = {c: enc.state.columns[c].stay for c in ("flag", "grade")}
    assert real["grade"] > 0.85 and enc.state.columns["sex"].stay is None  # temporal only
    x = enc.encode(df).x
    ds = enc.state.discrete_scale

    def flicker(seed: int) -> np.ndarray:  # the same patients, every category score blurred
        noisy = x.copy()
        idx = [i for i, (name, _, col) in enumerate(enc.channels) if col in ("flag", "grade") and not name.endswith("__missing")]
        noisy[:, idx] += np.random.default_rng(seed).normal(0.0, 0.9 * ds, size=noisy[:, idx].shape)
        return noisy

    report = enc.calibrate(flicker(0))["persistence"]
    assert set(report) == {"flag", "grade"}
    for col in ("flag", "grade"):
        assert report[col]["before"] < real[col] - 0.1  # the blur makes categories flicker ...
        assert report[col]["after"] >= real[col] and report[col]["penalty"] > 0  # ... the penalty restores runs
    fresh = enc.decode(flicker(1))  # new noise: the calibrated decoding carries over
    plain = enc.decode(flicker(1), decoding=dataclasses.replace(enc.decoding, switch_penalty={}))

    def stay(frame: pd.DataFrame, col: str) -> float:
        v = frame[col].astype(str)
        prev = v.groupby(frame["pid"]).shift(1)
        ok = prev.notna() & frame[col].notna() & (prev != "None") & (prev != "nan")
        return float((v[ok] == prev[ok]).mean())

    assert abs(stay(fresh, "grade") - real["grade"]) < 0.05 < abs(stay(plain, "grade") - real["grade"])
    json.dumps(enc.state_dict())  # the penalties are plain JSON, saved with the model


def test_calibrated_missingness_restores_the_real_missing_rate():
    df, schema = mixed_cohort(n=200)
    enc = TrajectoryEncoder(schema).fit(df)
    rate = enc.state.columns["lab"].missing_rate
    assert rate == pytest.approx(df["lab"].isna().mean()) and enc.state.columns["count"].missing_rate is None
    x = enc.encode(df).x
    ch = enc.channel_names.index("lab__missing")
    ds = enc.state.discrete_scale

    def shy(seed: int) -> np.ndarray:  # a generator that under-produces missingness: blurred, pulled down
        out = x.copy()
        out[:, ch] = out[:, ch] - 1.2 * ds + np.random.default_rng(seed).normal(0.0, 0.4 * ds, size=out[:, ch].shape)
        return out

    report = enc.calibrate(shy(0))["missing"]
    assert report["lab"]["before"] < rate / 2  # read by sign, most missing values are lost ...
    assert report["lab"]["after"] == pytest.approx(rate, abs=0.01)  # ... the threshold restores the rate
    assert report["lab"]["threshold"] < 0
    decoded = enc.decode(shy(1))  # fresh draws of the same generator
    assert decoded["lab"].isna().mean() == pytest.approx(rate, abs=0.03)
    # the missing values fall where the (blurred) channel is highest: mostly where the data had them
    truth = df.sort_values(["pid", "t"])["lab"].isna().to_numpy()
    assert (decoded["lab"].isna().to_numpy() & truth).sum() > 0.5 * truth.sum()


def test_calibrated_marginals_restore_each_numbers_real_distribution():
    from scipy import stats

    df, schema = mixed_cohort(n=200)
    enc = TrajectoryEncoder(schema).fit(df)
    x = enc.encode(df).x
    numbers = [
        i
        for i, (_, kind, col) in enumerate(enc.channels)
        if kind in ("level", "gap", "t0") or (kind == "value" and col in ("weight", "lab", "count"))
    ]
    assert len(numbers) == 8  # t0, gap + level, weight, lab + level, count + level

    def thin(seed: int) -> np.ndarray:  # a generator whose numbers come out shrunk, with a bias, blurred
        out = x.copy()
        noise = np.random.default_rng(seed).normal(0.0, 0.05, size=out[:, numbers].shape)
        out[:, numbers] = 0.6 * out[:, numbers] + 0.15 + noise
        return out

    plain = enc.decode(thin(1))
    report = enc.calibrate(thin(0))["marginals"]
    assert set(report) == {"__t0__", "__gap__", "weight", "lab", "count"}
    assert all(r["ks_before"] > 0.1 for r in report.values())
    fresh = enc.decode(thin(1))  # new draws: the calibrated map carries over

    def ks(frame: pd.DataFrame, what: str) -> float:
        def values(d: pd.DataFrame) -> np.ndarray:
            d = d.sort_values(["pid", "t"])
            if what == "gap":
                return d.groupby("pid")["t"].diff().dropna().to_numpy(float)
            if what in ("weight", "t0"):
                d = d.groupby("pid").head(1)
            return pd.to_numeric(d["t" if what == "t0" else what], errors="coerce").dropna().to_numpy(float)

        return float(stats.ks_2samp(values(frame), values(df)).statistic)

    for what in ("gap", "t0", "weight", "lab", "count"):
        assert ks(fresh, what) < 0.1 < ks(plain, what), what
    assert all(r["deviation_ks_before"] > 0.1 for k, r in report.items() if k in ("__gap__", "lab", "count"))
    # without smoothing the maps are monotone: each patient's visits keep their order (ties from
    # rounding aside); missingness untouched
    fresh = enc.decode(thin(1), decoding=enc.decoding.with_number("lab", smoothing=0.0))
    a, b = plain["lab"].to_numpy(float), fresh["lab"].to_numpy(float)
    same = plain["pid"].to_numpy()[1:] == plain["pid"].to_numpy()[:-1]
    assert np.all(np.nan_to_num(np.sign(np.diff(a))[same] * np.sign(np.diff(b))[same]) >= 0)
    assert (np.isnan(a) == np.isnan(b)).all()
    json.dumps(enc.state_dict())  # percentiles, plain JSON, saved with the model


def test_calibrated_deviations_restore_how_much_patients_vary():
    df, schema = mixed_cohort(n=200)
    fitted = TrajectoryEncoder(schema).fit(df)
    x = fitted.encode(df).x
    deviations = [i for i, (_, kind, col) in enumerate(fitted.channels) if kind == "value" and col in ("lab", "count")]

    def calm(seed: int) -> np.ndarray:  # patients' levels right, their visit-to-visit variation halved
        out = x.copy()
        out[:, deviations] = 0.5 * out[:, deviations] + np.random.default_rng(seed).normal(
            0.0, 0.02, size=out[:, deviations].shape
        )
        return out

    def spread(frame: pd.DataFrame, col: str) -> float:  # within-patient std, relative to the real one
        return float(frame.groupby("pid")[col].std().mean() / df.groupby("pid")[col].std().mean())

    values_only = TrajectoryEncoder.from_state(schema, fitted.state_dict())
    values_only.calibrate(calm(0), steps=("missingness", "values", "smoothing", "spikes", "persistence"))  # no deviations' map
    fitted.calibrate(calm(0))
    for col in ("lab", "count"):
        assert spread(fitted.decode(calm(1)), col) == pytest.approx(1.0, abs=0.1)
        # the values' map alone widens levels and deviations alike: patients still vary too little
        assert spread(values_only.decode(calm(1)), col) < 0.85


def test_smooth_averages_a_patients_visits_with_exponential_weights():
    d = np.array([[1.0, 0.0, 0.0, 7.0], [2.0, 2.0, 2.0, 2.0]])
    valid = np.array([[True, True, True, False], [True, True, True, True]])
    assert _smooth(d, valid, 0.0) is d
    out = _smooth(d, valid, 0.5)
    assert out[0, 0] == pytest.approx(1 / 1.75) and out[0, 1] == pytest.approx(0.5 / 2.0)  # weights 1, .5, .25
    assert out[0, 3] == 7.0 and out[1] == pytest.approx([2.0] * 4)  # padding untouched; a constant stays


def test_calibrated_persistence_of_numbers_restores_the_real_rank_lag1():
    rng = np.random.default_rng(0)
    n, length, phi = 300, 8, 0.8
    level = rng.normal(size=(n, 1))
    dev = np.zeros((n, length))
    dev[:, 0] = rng.normal(size=n)
    for k in range(1, length):
        dev[:, k] = phi * dev[:, k - 1] + np.sqrt(1 - phi**2) * rng.normal(size=n)
    df = pd.DataFrame(
        {"pid": np.repeat(np.arange(n), length), "t": np.tile(np.arange(length), n), "v": (0.5 * level + dev).ravel()}
    )
    schema = Schema.from_dict(
        {
            "name": "ar1",
            "id": "pid",
            "time": "t",
            "regular": True,
            "max_length": length,
            "columns": {"v": {"type": "real", "transform": "none"}},
        }
    )
    enc = TrajectoryEncoder(schema).fit(df)
    real = enc.state.columns["v"].lag1_rank
    x = enc.encode(df).x
    ch = enc.channel_names.index("v")

    def restless(seed: int) -> np.ndarray:  # the right levels, deviations half replaced by visit-to-visit noise
        out = x.copy()
        out[:, ch] = 0.7 * out[:, ch] + np.random.default_rng(seed).normal(0.0, 0.5 * out[:, ch].std(), size=out[:, ch].shape)
        return out

    def rank_lag1(frame: pd.DataFrame) -> float:
        prev = frame.groupby("pid")["v"].shift(1)
        ok = prev.notna()
        return float(pd.Series(frame["v"][ok].to_numpy()).corr(pd.Series(prev[ok].to_numpy()), method="spearman"))

    assert rank_lag1(df) == pytest.approx(real)
    report = enc.calibrate(restless(0))["marginals"]["v"]
    # the noise, spread to the real deviations' width by their map, lowers persistence ...
    assert report["lag1_rank_before"] < real - 0.05 and report["smoothing"] > 0
    assert report["lag1_rank_after"] == pytest.approx(real, abs=0.01)  # ... the smoothing restores it
    assert rank_lag1(enc.decode(restless(1))) == pytest.approx(real, abs=0.03)  # new noise: it carries over


def test_isolation_is_a_visits_departure_from_its_neighbours_mean():
    d = np.array([[1.0, 5.0, 3.0, 9.0], [4.0, 0.0, 0.0, 0.0]])
    valid = np.array([[True, True, True, False], [True, False, False, False]])
    assert _isolation(d, valid) == pytest.approx(np.array([[-4.0, 3.0, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))


def test_calibrated_spikes_restore_a_spiky_labs_pearson_lag1_and_keep_its_marginal():
    from scipy import stats

    rng = np.random.default_rng(0)
    n, length = 300, 8
    dev = np.zeros((n, length))
    dev[:, 0] = rng.normal(size=n)
    for k in range(1, length):
        dev[:, k] = 0.8 * dev[:, k - 1] + 0.6 * rng.normal(size=n)
    calm = 10.0 + 0.5 * rng.normal(size=(n, 1)) + 0.5 * dev
    # 1.5% of visits are single-visit spikes (a lab error, an acute episode) the next visit does not repeat
    spiky = np.where(rng.random((n, length)) < 0.015, calm + rng.uniform(4.0, 12.0, size=calm.shape), calm)

    def frame(v: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"pid": np.repeat(np.arange(n), length), "t": np.tile(np.arange(length), n), "v": v.ravel()})

    def lag1(f: pd.DataFrame, method: str = "pearson") -> float:
        prev = f.groupby("pid")["v"].shift(1)
        ok = prev.notna()
        return float(pd.Series(f["v"][ok].to_numpy()).corr(pd.Series(prev[ok].to_numpy()), method=method))

    schema = Schema.from_dict(
        {"name": "spiky", "id": "pid", "time": "t", "regular": True, "max_length": length, "columns": {"v": {"type": "real"}}}
    )
    df = frame(spiky)
    enc = TrajectoryEncoder(schema).fit(df)
    real = {"lag1": enc.state.columns["v"].lag1, "lag1_rank": enc.state.columns["v"].lag1_rank}
    assert real["lag1"] == pytest.approx(lag1(df)) and real["lag1"] < real["lag1_rank"] - 0.3  # spikes: Pearson far below rank
    x = enc.encode(frame(calm)).x  # a generator that gets the course right but makes no spikes
    ch = enc.channel_names.index("v")

    def draw(seed: int) -> np.ndarray:
        out = x.copy()
        out[:, ch] += np.random.default_rng(seed).normal(0.0, 0.2 * out[:, ch].std(), size=out[:, ch].shape)
        return out

    unspiked = TrajectoryEncoder.from_state(schema, enc.state_dict())
    unspiked.calibrate(draw(0), steps=("missingness", "values", "deviations", "smoothing", "persistence"))  # no spikes
    report = enc.calibrate(draw(0))["marginals"]["v"]
    assert report["lag1_before"] > real["lag1"] + 0.2 and 0 < report["spikes"] <= 0.01
    assert report["lag1_after"] == pytest.approx(real["lag1"], abs=0.03)
    plain, spiked = unspiked.decode(draw(1)), enc.decode(draw(1))  # fresh draws
    assert lag1(plain) > real["lag1"] + 0.2
    assert lag1(spiked) == pytest.approx(real["lag1"], abs=0.1)  # ... the spikes carry over
    # each decoded set holds its share of spikes, so fresh draws scatter little around the real
    # lag-1 (a threshold fixed at calibration, letting each draw make as many as it happens to: up to 0.046 off)
    assert max(abs(lag1(enc.decode(draw(seed))) - real["lag1"]) for seed in range(2, 12)) < 0.03
    assert lag1(spiked, "spearman") == pytest.approx(real["lag1_rank"], abs=0.05)  # rare: the bulk keeps its persistence
    assert stats.ks_2samp(spiked["v"], df["v"]).statistic < 0.03  # and the marginal stays the real one

    def isolated(f: pd.DataFrame) -> float:  # share of the top 0.5% of values with no neighbouring visit in the top 5%
        top, high = f["v"] > np.quantile(df["v"], 0.995), np.quantile(df["v"], 0.95)
        near = pd.concat([f["v"].groupby(f["pid"]).shift(k)[top] for k in (1, -1)], axis=1)
        return float((near.fillna(-np.inf) < high).all(axis=1).mean())

    assert isolated(spiked) >= isolated(df) - 0.1 > isolated(plain) + 0.2  # the top values: single visits, as in the data (0.83)
    # a lab whose Pearson lag-1 is already right gets no spikes
    assert all(
        r.get("spikes", 0.0) == 0.0
        for r in TrajectoryEncoder(schema)
        .fit(frame(calm))
        .calibrate(TrajectoryEncoder(schema).fit(frame(calm)).encode(frame(calm)).x)["marginals"]
        .values()
    )


def test_quantile_deviations_turn_a_heavy_tail_into_a_normal_shape():
    from scipy import stats

    rng = np.random.default_rng(0)
    rows = [
        {"pid": p, "t": k, "lab": float(np.exp(rng.normal(0, 0.5) + 0.1 * rng.standard_t(2)))}
        for p in range(200)
        for k in range(8)
    ]  # stable patients, rare large spikes
    df = pd.DataFrame(rows)
    schema = Schema.from_dict(
        {
            "name": "spiky",
            "id": "pid",
            "time": "t",
            "regular": True,
            "max_length": 8,
            "columns": {"lab": {"type": "real", "min": 0, "transform": "log"}},
        }
    )
    kurtosis = {}
    for coding in ("linear", "quantile"):
        enc = TrajectoryEncoder(schema, deviations=coding).fit(df)
        e = enc.encode(df)
        i = enc.channel_names.index("lab")
        kurtosis[coding] = stats.kurtosis(e.x[:, i][e.mask[:, i] > 0])
        assert np.abs(e.x[:, i]).max() <= enc.clip_bounds[i] + 1e-6
        np.testing.assert_allclose(enc.decode(e.x)["lab"].to_numpy(), df["lab"].to_numpy(), rtol=1e-6)
    assert kurtosis["linear"] > 5 and abs(kurtosis["quantile"]) < 0.5, kurtosis


@pytest.mark.parametrize("position", [False, True])
def test_only_a_position_aware_unet_tells_interior_visits_apart(position):
    torch.manual_seed(0)
    net = Unet1D(3, base_channels=16, channel_mults=(1, 2), blocks_per_level=1, time_embed_dim=16, position=position)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    out = net(torch.ones(1, 3, 64), torch.tensor([5]))  # the same input at every visit
    interior = out[0, :, 24:40]  # far from both ends, beyond the convolutions' reach of the padding
    assert torch.allclose(interior, interior[:, :1].expand_as(interior), atol=1e-5) != position


def dosing_cohort(n: int = 30, seed: int = 0) -> tuple[pd.DataFrame, Schema]:
    """Doses kept for runs of visits every 6 hours (sometimes 12), a lab that never repeats."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n):
        t, dose = 0.0, float(rng.choice([100, 200, 300]))
        for _ in range(int(rng.integers(3, 10))):
            if rng.random() < 0.2:
                dose = float(rng.choice([100, 200, 300]))
            rows.append({"pid": pid, "hour": t, "dose": dose, "lab": float(rng.lognormal(1, 0.3))})
            t += 6.0 if rng.random() < 0.8 else 12.0
    columns = {"dose": {"type": "real", "min": 0}, "lab": {"type": "real", "min": 0}}
    schema = Schema.from_dict(
        {"name": "dosing", "id": "pid", "time": "hour", "regular": False, "max_length": 10, "columns": columns}
    )
    return pd.DataFrame(rows), schema


def test_repeated_values_and_gaps_get_a_channel_the_decoder_carries_forward():
    df, schema = dosing_cohort()
    enc = TrajectoryEncoder(schema, repeat_share=0.05).fit(df)
    assert enc.state.repeats == ["__gap__", "dose"]  # the lab's values never repeat
    e = enc.encode(df)
    assert_same(df, enc.decode(e.x), schema)
    # noise on every number: decoded values still repeat exactly where the repeat channels say so
    x = e.x + np.random.default_rng(1).normal(0, 0.05, e.x.shape).astype(np.float32)
    out = enc.decode(x)
    same = x[:, enc.index("dose__same"), :] > 0
    valid = enc.valid(x)
    flagged = same & valid & np.roll(valid, 1, axis=1)
    flagged[:, 0] = False
    grid = np.full(valid.shape, np.nan)
    grid[np.nonzero(valid)] = out["dose"].to_numpy(float)
    assert flagged.sum() > 20 and np.array_equal(grid[:, 1:][flagged[:, 1:]], grid[:, :-1][flagged[:, 1:]])
    gaps = out.groupby("pid")["hour"].diff().to_numpy()
    real_gaps = df.sort_values(["pid", "hour"]).groupby("pid")["hour"].diff().to_numpy()
    share = lambda g: float(np.mean(g[1:][~np.isnan(g[1:]) & ~np.isnan(g[:-1])] == g[:-1][~np.isnan(g[1:]) & ~np.isnan(g[:-1])]))  # noqa: E731
    assert share(gaps) > 0.5 and abs(share(gaps) - share(real_gaps)) < 0.15


def test_an_encoder_state_saved_before_repeat_channels_has_none(pbc, pbc_schema):
    enc = TrajectoryEncoder(pbc_schema, repeat_share=0.05).fit(pbc)
    raw = enc.state_dict()
    assert raw["repeats"]  # PBC's integer labs repeat
    del raw["repeats"]
    old = TrajectoryEncoder.from_state(pbc_schema, raw)
    assert old.state.repeats == [] and not any(ch.kind == "repeat" for ch in old.channels)


def test_discrete_heads_read_logits_as_the_expected_code_and_score_by_cross_entropy():
    heads = DiscreteHeads([[0], [1, 2, 3]], scale=0.5)
    x0 = torch.tensor([0.5, -0.5, 0.5, -0.5]).view(1, 4, 1)  # binary on, category 2 of 3
    sure = torch.tensor([20.0, -20.0, 20.0, -20.0]).view(1, 4, 1)
    torch.testing.assert_close(heads.x0(sure, torch.zeros(1, 4, 1)), x0, atol=1e-6, rtol=0)
    unsure = heads.x0(torch.zeros(1, 4, 1), torch.zeros(1, 4, 1)).flatten()
    torch.testing.assert_close(unsure, torch.tensor([0.0, -1 / 6, -1 / 6, -1 / 6]))
    mask = torch.ones(1, 4, 1)
    assert float(heads.loss(sure, x0, mask)) < 1e-6
    assert float(heads.loss(torch.zeros(1, 4, 1), x0, mask)) == pytest.approx(np.log(2) + np.log(3), rel=1e-5)
    assert float(heads.loss(torch.zeros(1, 4, 1), x0, torch.zeros(1, 4, 1))) == 0.0  # masked visits cost nothing
    assert heads.continuous(mask).flatten().tolist() == [0.0, 0.0, 0.0, 0.0]


def test_the_sampler_draws_categories_at_their_rates_from_the_exact_logits():
    """Categories coded -/+0.4 with rates (0.2, 0.5, 0.3): the Bayes-optimal logits given x_t are
    log rate + the Gaussian log-likelihood of x_t under each code; eight solver steps must then
    return every category at its rate, and each visit's code a clear one-hot."""
    rates, scale = torch.tensor([0.2, 0.5, 0.3]), 0.4
    codes = scale * (2 * torch.eye(3) - 1)  # [category, channel]
    d = GaussianDiffusion(steps=1000, prediction="v", discrete=DiscreteHeads([[0, 1, 2]], scale))
    table = torch.as_tensor(d.alphas_cumprod, dtype=torch.float32)

    class Exact(torch.nn.Module):
        def forward(self, x, t):
            a = table[t].view(-1, 1, 1, 1)
            dist = ((x[:, None] - a.sqrt() * codes[None, :, :, None]) ** 2).sum(2, keepdim=True)  # [B, K, 1, L]
            return rates.log().view(1, 3, 1) - dist[:, :, 0] / (2 * (1 - a[:, :, 0]))

    out = sample_loop(
        Exact(), d, (4000, 3, 4), method="dpmpp2m", steps=8, generator=torch.Generator().manual_seed(2), clip=[scale] * 3
    )
    drawn = torch.bincount(out.argmax(1).flatten(), minlength=3).float() / out[:, 0].numel()
    torch.testing.assert_close(drawn, rates, atol=0.02, rtol=0)
    assert float(out.max(1).values.min()) > 0.9 * scale  # every visit settled on one category
