"""The visit-token transformer denoiser: any length, padding invisible, order seen, config-built."""

from __future__ import annotations

import pytest
import torch

from diffusion.config import ModelConfig
from diffusion.encoding.layout import visit_mask
from diffusion.model.build import build_denoiser
from diffusion.model.schedule import GaussianDiffusion
from diffusion.model.transformer import VisitTransformer

C = 5


def random_net(seed: int = 0, **kw) -> VisitTransformer:
    torch.manual_seed(seed)
    net = VisitTransformer(C, width=16, depth=2, heads=2, time_embed_dim=8, **kw)
    with torch.no_grad():  # the zero-initialised gates and output would hide every other weight
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net.eval()


@pytest.mark.parametrize("patch", [1, 3])
@pytest.mark.parametrize("length", [1, 2, 7, 16, 500])
def test_any_length_gives_the_input_shape(length, patch):
    net = random_net(self_condition=True, patch=patch)
    x = torch.randn(3, C, length)
    out = net(x, torch.tensor([0, 10, 999]), torch.randn_like(x), visits=torch.ones(3, length, dtype=torch.bool))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("position,patch", [(False, 1), (True, 1), (False, 4)])
def test_padding_after_the_last_visit_never_reaches_a_visit(position, patch):
    """Also with tokens of several visits, where a token holds a patient's last visits and padding."""
    net = random_net(self_condition=True, position=position, patch=patch)
    lengths = torch.tensor([3, 9, 1, 12])
    visits = torch.from_numpy(visit_mask(lengths.numpy(), 12))
    x, x_self, t = torch.randn(4, C, 12), torch.randn(4, C, 12), torch.tensor([5, 50, 500, 900])
    other_x, other_self = x.clone(), x_self.clone()
    pad = ~visits[:, None, :].expand_as(x)
    other_x[pad] = torch.randn(int(pad.sum())) * 10
    other_self[pad] = torch.randn(int(pad.sum())) * 10
    a, b = net(x, t, x_self, visits=visits), net(other_x, t, other_self, visits=visits)
    keep = visits[:, None, :].expand_as(a)
    assert torch.allclose(a[keep], b[keep], atol=1e-5)
    unmasked_a, unmasked_b = net(x, t, x_self), net(other_x, t, other_self)
    assert not torch.allclose(unmasked_a[keep], unmasked_b[keep], atol=1e-3)  # without the mask it would


def test_the_order_of_visits_matters():
    net = random_net()
    x, t = torch.randn(2, C, 10), torch.tensor([100, 100])
    forward = net(x, t)
    backward = net(x.flip(-1), t).flip(-1)
    assert not torch.allclose(forward, backward, atol=1e-3)  # attention alone would be permutation-equivariant


@pytest.mark.parametrize("position", [False, True])
def test_only_the_visit_index_tells_interior_visits_apart(position):
    net = random_net(position=position)  # depth 2, kernel 3: a visit 3 or more from either end sees no edge
    x = torch.randn(1, C, 1).expand(1, C, 16).contiguous()  # every visit alike
    out = net(x, torch.tensor([100]), visits=torch.ones(1, 16, dtype=torch.bool))
    interior = out[0, :, 3:13]
    assert torch.allclose(interior, interior[:, :1].expand_as(interior), atol=1e-5) != position


def test_the_noise_level_conditions_the_output():
    net = random_net()
    x = torch.randn(1, C, 6).repeat(2, 1, 1)
    out = net(x, torch.tensor([1, 900]))
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_a_fresh_network_predicts_zeros_and_learns():
    cfg = ModelConfig(kind="transformer", base_channels=8, time_embed_dim=8, depth=2, self_condition=False, patch=1)
    net = build_denoiser(C, cfg)
    assert isinstance(net, VisitTransformer) and net.blocks[0].attn.qkv.in_features == 16  # width: twice base_channels
    x0 = torch.linspace(-1, 1, 8).repeat(32, C, 1)
    d, g = GaussianDiffusion(steps=100), torch.Generator().manual_seed(0)
    visits = torch.ones(32, 8, dtype=torch.bool)
    assert float(net(x0, torch.zeros(32, dtype=torch.long), visits=visits).detach().abs().max()) == 0.0
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        t = torch.randint(0, 100, (32,), generator=g)
        loss = d.training_losses(net, x0, t, torch.ones_like(x0), torch.randn(x0.shape, generator=g), visits=visits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown model.kind"):
        build_denoiser(C, ModelConfig(kind="lstm", base_channels=8))


def test_the_auto_width_grows_with_the_visits_a_token_holds():
    from diffusion.config import auto_patch, auto_width

    assert [auto_width(n) for n in (20, 225, 5000)] == [16, 32, 48]  # one visit per token: by patients alone
    assert auto_width(216, auto_patch(66)) == 56 and auto_width(86, auto_patch(326)) == 96  # 3 and 16 visits per token
    assert auto_patch(5) == 1 and auto_patch(39) == 1 and auto_patch(40) == 2
