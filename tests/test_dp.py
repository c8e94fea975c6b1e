"""DP-SGD training (diffusion.training.dp): accounting, exact per-sample gradients, clipping, empty
batches, learning under noise, and weights that load into the plain U-Net."""

from __future__ import annotations

import pytest
import torch

from diffusion.config import ModelConfig
from diffusion.model.build import build_denoiser
from diffusion.model.schedule import GaussianDiffusion
from diffusion.model.unet import build_unet
from diffusion.training.dp import DPTrainer, default_delta, plain_state_dict, poisson_indices

pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning"),  # Opacus' hooks on the input layers
    pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha:UserWarning"),
]

CHANNELS, VISITS, PATIENTS = 4, 8, 64
TINY = dict(kind="unet", base_channels=16, channel_mults=(1,), time_embed_dim=16, patch=1)  # self-conditioned, 4-head attention


@pytest.fixture(autouse=True)
def one_thread():
    # tensors this small gain nothing from a second thread but its synchronisation cost
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unet(seed: int = 0, randomize: bool = False, **overrides):
    torch.manual_seed(seed)
    model = build_denoiser(CHANNELS, ModelConfig(**{**TINY, **overrides}))
    if randomize:  # the zero-initialised output layers would otherwise hide every other weight
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
    return model


def ar1_patients(n: int = PATIENTS, seed: int = 0) -> torch.Tensor:
    """[n, CHANNELS, VISITS] trajectories x_t = 0.8 x_{t-1} + 0.6 e_t (stationary, unit variance)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, CHANNELS, VISITS)
    x[..., 0] = torch.randn(n, CHANNELS, generator=g)
    for t in range(1, VISITS):
        x[..., t] = 0.8 * x[..., t - 1] + 0.6 * torch.randn(n, CHANNELS, generator=g)
    return x


def make_trainer(model, *, lr=3e-3, optimizer=None, **kw) -> DPTrainer:
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr)
    args = dict(n=PATIENTS, batch_size=16, steps=150, target_epsilon=10.0, max_grad_norm=1.0)
    return DPTrainer(model, opt, **{**args, **kw})


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def test_poisson_indices_sample_each_record_independently():
    idx = poisson_indices(10_000, 0.25, torch.Generator().manual_seed(0))
    assert idx.dtype == torch.int64 and bool((idx[1:] > idx[:-1]).all())  # sorted, no repeats
    assert abs(len(idx) - 2500) < 4 * (10_000 * 0.25 * 0.75) ** 0.5
    again = poisson_indices(10_000, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    assert poisson_indices(50, 0.0, torch.Generator().manual_seed(0)).numel() == 0


def test_default_delta_stays_well_below_one_over_n():
    assert default_delta(250) == 1e-5
    assert default_delta(10**7) == pytest.approx(1e-8)


def test_smaller_epsilon_needs_more_noise():
    strict = make_trainer(tiny_unet(), target_epsilon=1.0)
    loose = make_trainer(tiny_unet(), target_epsilon=10.0)
    assert strict.noise_multiplier > loose.noise_multiplier > 0


def test_planned_steps_spend_the_target_epsilon_and_no_more():
    trainer = make_trainer(tiny_unet(), n=1000, batch_size=20, steps=300, target_epsilon=2.0)
    assert trainer.epsilon() == 0.0
    for _ in range(300):
        trainer.step(None)  # empty batches: noise-only steps, accounted like any other
    assert 0.9 * 2.0 <= trainer.epsilon() <= 2.0
    with pytest.raises(RuntimeError, match="planned DP steps"):
        trainer.step(None)


@pytest.mark.parametrize(
    "kind,self_condition,position,patch",
    [
        ("unet", False, False, 1),
        ("unet", True, False, 1),
        ("transformer", True, False, 1),
        ("transformer", True, True, 1),
        ("transformer", True, False, 3),
    ],
)
def test_per_sample_gradients_equal_one_patient_at_a_time(kind, self_condition, position, patch):
    model = tiny_unet(randomize=True, self_condition=self_condition, kind=kind, position=position, patch=patch)
    trainer = make_trainer(model, noise_multiplier=1.0)
    diffusion = GaussianDiffusion(steps=100, prediction="v")
    g = torch.Generator().manual_seed(1)
    x = ar1_patients(5)
    t, noise = torch.randint(0, 100, (5,), generator=g), torch.randn(x.shape, generator=g)
    mask, first = torch.ones_like(x), torch.tensor([True, False, True, True, False])
    visits = torch.arange(x.shape[2])[None, :] < torch.tensor([[x.shape[2]], [3], [1], [x.shape[2]], [5]])
    diffusion.training_losses(trainer.model, x, t, mask, noise, first, visits=visits).sum().backward()
    params = list(model.parameters())
    for i in range(5):
        one = slice(i, i + 1)
        alone = diffusion.training_losses(model, x[one], t[one], mask[one], noise[one], first[one], visits=visits[one])
        want = flat(torch.autograd.grad(alone.sum(), params))
        got = flat(p.grad_sample[i] for p in params)
        assert (got - want).norm() <= 1e-4 * want.norm()


def test_each_patient_gradient_is_clipped_before_averaging():
    model = tiny_unet(randomize=True)
    clip, batch, lr = 1e-3, 6, 1.0
    trainer = make_trainer(
        model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), batch_size=batch, noise_multiplier=0.0, max_grad_norm=clip
    )
    diffusion = GaussianDiffusion(steps=100, prediction="v")
    g = torch.Generator().manual_seed(2)
    x = ar1_patients(batch)
    t, noise, mask = torch.randint(0, 100, (batch,), generator=g), torch.randn(x.shape, generator=g), torch.ones_like(x)
    params = list(model.parameters())
    per_patient = [
        flat(
            torch.autograd.grad(
                diffusion.training_losses(model, x[i : i + 1], t[i : i + 1], mask[i : i + 1], noise[i : i + 1]).sum(), params
            )
        )
        for i in range(batch)
    ]
    assert min(float(gi.norm()) for gi in per_patient) > 10 * clip  # every patient's gradient is cut
    expected = -lr * sum(gi * min(1.0, clip / float(gi.norm())) for gi in per_patient) / batch
    before = flat(params)
    trainer.step(diffusion.training_losses(trainer.model, x, t, mask, noise))
    update = flat(params) - before
    assert update.norm() <= clip * (1 + 1e-3)
    assert torch.allclose(update, expected, atol=1e-7, rtol=1e-3)


def test_empty_batch_is_a_noise_only_step():
    model = tiny_unet()
    trainer = make_trainer(model, noise_multiplier=1.0)
    diffusion = GaussianDiffusion(steps=100, prediction="v")
    empty = torch.zeros(0, CHANNELS, VISITS)
    before = flat(model.parameters())
    trainer.step(diffusion.training_losses(trainer.model, empty, torch.zeros(0, dtype=torch.long), empty))
    trainer.step(None)  # the forward skipped altogether
    assert trainer.steps_taken == 2 and trainer.epsilon() > 0
    assert not torch.equal(flat(model.parameters()), before)  # noise moved the weights

    silent = tiny_unet()
    quiet = make_trainer(silent, optimizer=torch.optim.SGD(silent.parameters(), lr=1.0), noise_multiplier=0.0)
    before = flat(silent.parameters())
    quiet.step(None)
    assert torch.equal(flat(silent.parameters()), before)  # no records and no noise: a zero gradient


def train_steps(trainer: DPTrainer, x: torch.Tensor, steps: int, seed: int = 0) -> None:
    diffusion = GaussianDiffusion(steps=100, prediction="v")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = poisson_indices(len(x), trainer.sample_rate, gen)
        t = torch.randint(0, diffusion.steps, (len(idx),), generator=gen)
        noise = torch.randn((len(idx), *x.shape[1:]), generator=gen)
        first = torch.rand(len(idx), generator=gen) < 0.5
        trainer.step(diffusion.training_losses(trainer.model, x[idx], t, torch.ones_like(x[idx]), noise, first))


def test_short_dp_run_lowers_the_loss():
    x = ar1_patients()
    diffusion = GaussianDiffusion(steps=100, prediction="v")
    g = torch.Generator().manual_seed(1)
    xs = x.repeat(4, 1, 1)  # fixed (t, noise) draws, four per patient
    t, noise = torch.randint(0, 100, (len(xs),), generator=g), torch.randn(xs.shape, generator=g)

    def fixed_loss(m) -> float:
        with torch.no_grad():
            return float(diffusion.training_losses(m, xs, t, torch.ones_like(xs), noise).mean())

    model = tiny_unet()
    untrained = fixed_loss(model)
    trainer = make_trainer(model, steps=150, target_epsilon=10.0)
    train_steps(trainer, x, 150)
    assert trainer.epsilon() <= 10.0
    assert fixed_loss(model) < 0.98 * untrained


def test_weights_load_into_the_plain_unet():
    model = tiny_unet(randomize=True)
    trainer = make_trainer(model, noise_multiplier=1.0)
    train_steps(trainer, ar1_patients(), 3)
    plain = build_unet(CHANNELS, ModelConfig(**TINY))
    plain.load_state_dict(plain_state_dict(trainer.model), strict=True)
    assert set(plain_state_dict(trainer.model)) == set(model.state_dict())
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(5, CHANNELS, VISITS, generator=g), torch.randint(0, 100, (5,), generator=g)
    x_self = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        wrapped = trainer.model(x, t, x_self)
        assert wrapped.abs().max() > 1e-2  # a real comparison, not zeros against zeros
        torch.testing.assert_close(plain(x, t, x_self), wrapped, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x, t, x_self), wrapped, rtol=1e-5, atol=1e-6)  # `model` holds the weights


def test_self_conditioned_model_trains_under_dp():
    model = tiny_unet(self_condition=True)
    trainer = make_trainer(model, steps=20, noise_multiplier=1.0)
    assert trainer.model.self_condition  # training_losses reads the flag off the wrapped model
    calls = []
    trainer.model._module.register_forward_pre_hook(lambda m, args: calls.append(len(args)))
    before = flat(model.parameters())
    train_steps(trainer, ar1_patients(), 20)
    assert trainer.steps_taken == 20 and trainer.epsilon() > 0
    assert 3 in calls and calls.count(2) == calls.count(3)  # a gradient-free first pass, then the x0-conditioned one
    assert torch.isfinite(flat(model.parameters())).all() and not torch.equal(flat(model.parameters()), before)


def test_resumed_trainer_continues_the_accounting():
    model = tiny_unet()
    first = make_trainer(model, noise_multiplier=1.0)
    for _ in range(3):
        first.step(None)
    resumed = make_trainer(model, noise_multiplier=1.0, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert resumed.steps_taken == 3 and resumed.epsilon() == first.epsilon()
    assert torch.equal(resumed.generator.get_state(), first.generator.get_state())


def test_the_unets_shared_position_features_are_refused():
    with pytest.raises(ValueError, match="position"):
        make_trainer(tiny_unet(position=True))
