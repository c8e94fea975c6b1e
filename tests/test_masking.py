"""Masked diffusion for the temporal discrete channels (`diffusion.discrete=masked`): what training
hides and scores, and what the sampler draws from exact logits."""

import numpy as np
import pandas as pd
import pytest
import torch
from test_diffusion import mixed_cohort

from diffusion.bundle.fit import fit
from diffusion.bundle.folder import HealthGymModel
from diffusion.config import Config
from diffusion.data.schema import Schema
from diffusion.encoding import TrajectoryEncoder
from diffusion.model.discrete import DiscreteHeads
from diffusion.model.masking import MaskedGroups
from diffusion.model.sampler import sample_loop
from diffusion.model.schedule import GaussianDiffusion


def _process(groups, scale=0.5, static=()):
    heads = DiscreteHeads(groups, scale)
    return GaussianDiffusion(steps=1000, prediction="v", discrete=heads, masked=MaskedGroups(heads, list(static)))


def test_training_hides_each_temporal_group_at_one_minus_alpha_bar_and_leaves_static_ones_gaussian():
    d = _process([[1], [2, 3, 4], [5]], static=[5])
    assert d.masked.groups == [[1], [2, 3, 4]]
    B, L = 4000, 3
    x0 = torch.full((B, 6, L), -0.5)
    x0[:, 2] = 0.5  # category 1 of 3
    t = torch.full((B,), 500, dtype=torch.long)
    a = d.abar(t, x0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    hidden_x, hidden = d.masked.hide(x0, x_t, a, noise)
    share = float(hidden[:, 1].mean())
    assert share == pytest.approx(1 - float(a[0]), abs=0.02)
    assert torch.equal(hidden[:, 2], hidden[:, 3]) and torch.equal(hidden[:, 2], hidden[:, 4])  # a category hides whole
    assert torch.all(hidden_x[:, 1][hidden[:, 1] > 0] == 0) and torch.all(hidden_x[:, 1][hidden[:, 1] == 0] == -0.5)
    assert torch.equal(hidden_x[:, [0, 5]], x_t[:, [0, 5]]) and float(hidden[:, [0, 5]].abs().sum()) == 0


def test_the_cross_entropy_reads_only_the_masked_visits():
    d = _process([[0]])
    x0 = torch.full((64, 1, 5), 0.5)
    wrong = lambda x, t: torch.full_like(x, -20.0)  # noqa: E731  (sure of the wrong class everywhere)
    mask = torch.ones_like(x0)
    early = d.training_losses(wrong, x0, torch.zeros(64, dtype=torch.long), mask)  # abar ~ 1: nothing hidden
    late = d.training_losses(wrong, x0, torch.full((64,), 999, dtype=torch.long), mask)  # everything hidden
    assert float(early.max()) < 0.5 and float(late.min()) > 10


def test_the_sampler_draws_each_visit_once_given_the_revealed_ones():
    """One binary label, constant within a patient, on in 30% of patients: the exact logits are the
    revealed visits' sign when any is revealed, else the rate. Every sampled patient must keep one
    label, and 30% of them must have it on: a draw per visit from rounded means would not."""
    scale, rate = 0.5, 0.3
    d = _process([[0]], scale)

    class Exact(torch.nn.Module):
        def forward(self, x, t):
            seen = x.sum(-1, keepdim=True)  # revealed visits hold -/+scale, masked ones 0
            prior = torch.full_like(seen, float(np.log(rate / (1 - rate))))
            return torch.where(seen != 0, 20.0 * seen.sign(), prior).expand_as(x)

    out = sample_loop(Exact(), d, (3000, 1, 6), method="dpmpp2m", steps=8, generator=torch.Generator().manual_seed(1))
    assert set(np.unique(out.numpy()).tolist()) == {-scale, scale}
    assert bool(torch.all(out.min(-1).values == out.max(-1).values))  # one label per patient
    assert float((out[:, 0, 0] > 0).float().mean()) == pytest.approx(rate, abs=0.03)


def test_known_groups_are_revealed_at_their_given_codes():
    d = _process([[0], [1]])
    given = torch.full((50, 1, 4), -0.5)
    out = sample_loop(
        lambda x, t: torch.full_like(x, 20.0), d, (50, 2, 4), steps=4, known=([1], given), generator=torch.Generator()
    )
    assert bool(torch.all(out[:, 1] == -0.5)) and bool(torch.all(out[:, 0] == 0.5))


def test_a_masked_model_folder_trains_saves_and_samples_the_same_patients(tmp_path):
    df = pd.read_csv("flows/data/pbcseq.csv")
    df = df[df["id"].isin(df["id"].unique()[:60])]
    schema = Schema.load("flows/data/pbc.yaml")
    cfg = Config().with_overrides({"diffusion.discrete": "masked", "train.max_steps": 30, "train.memorisation_patients": 0})
    model, _ = fit(df, schema, cfg, progress=False, calibrate=False)
    groups = model.diffusion.masked.groups
    assert groups and not set(model.encoder.static_channels) & {c for g in groups for c in g}
    x = model.sample_tensor(20, seed=3)
    codes = x[:, [c for g in groups for c in g]]
    np.testing.assert_allclose(np.abs(codes), model.encoder.state.discrete_scale, rtol=1e-6)  # every code drawn
    model.save(tmp_path / "m")
    again = HealthGymModel.load(tmp_path / "m")
    assert np.array_equal(again.sample_tensor(20, seed=3), x)


def test_missingness_calibration_leaves_drawn_codes_as_drawn():
    """Codes at exactly -/+scale with 10 points more missing than the real rate: no threshold can
    match the rate, and one at the code itself would decode every such visit as recorded."""
    df, schema = mixed_cohort(n=200)
    enc = TrajectoryEncoder(schema).fit(df)
    e = enc.encode(df)
    x, s = e.x.copy(), enc.state.discrete_scale
    ch = enc.index("lab__missing")
    recorded = np.argwhere((e.mask[:, ch] > 0) & (x[:, ch] < 0))
    pick = recorded[np.random.default_rng(0).random(len(recorded)) < 0.15]
    x[pick[:, 0], ch, pick[:, 1]] = s
    drawn_rate = float(enc.decode(x)["lab"].isna().mean())
    report = enc.calibrate(x, ("missingness",))
    assert report["missing"]["lab"]["after"] == pytest.approx(report["missing"]["lab"]["before"])
    assert float(enc.decode(x)["lab"].isna().mean()) == pytest.approx(drawn_rate)
    assert drawn_rate > enc.state.columns["lab"].missing_rate + 0.05
