"""A visit-token transformer denoiser: (x_t [B, C, L], t [B], x_self, visits) -> the output (eps or v) [B, C, L].

Each visit is a token (its C channels, and the self-conditioning estimate, projected to `width`).
Blocks of self-attention over the patient's visits and a feed-forward layer whose hidden
features pass through a depthwise convolution over time, so a block sees both the whole
trajectory (attention) and the order of neighbouring visits (the convolution; attention alone
is blind to order). The noise level conditions every block by adaptive layer norm (FiLM: a
scale, a shift and a zero-initialised gate per sub-layer, from the timestep embedding).

`visits` ([B, L] bools, True at a recorded visit) masks the visits after a patient's last one
out of attention and out of the convolution, so a patient's tokens never read padding and any
length is modelled without padding artefacts; without it every position is a visit.

`patch` > 1 makes a token of that many consecutive visits (their channels side by side, padding
visits zeroed), and the output layer returns each of them: attention and the blocks then run
over L / patch tokens, which is what a long cohort's step costs.
The network knows nothing about noise schedules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.model.unet import timestep_embedding


class _Attention(nn.Module):
    """Multi-head self-attention over visits with a key mask (plain Linear layers, so DP-SGD's
    per-sample gradients cover it)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if keys is None else keys[:, None, None, :]  # [B, 1, 1, L]: True where a key may be read
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(a.transpose(1, 2).reshape(B, L, D))


class _ConvFeedForward(nn.Module):
    """Linear -> GELU -> depthwise convolution over time (kernel 3) -> Linear."""

    def __init__(self, width: int, mult: int, dropout: float):
        super().__init__()
        hidden = mult * width
        self.up = nn.Linear(width, hidden)
        self.conv = nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden)
        self.down = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        h = F.gelu(self.up(h))
        if keep is not None:  # padding contributes nothing to a visit's neighbours
            h = h * keep
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.down(self.dropout(F.gelu(h)))


class Block(nn.Module):
    """Attention and convolutional feed-forward, each under adaptive layer norm with a gate."""

    def __init__(self, width: int, heads: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.ff = _ConvFeedForward(width, 2, dropout)
        self.film = nn.Linear(emb_dim, 6 * width)
        nn.init.zeros_(self.film.weight)  # every block starts as the identity
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.film(emb)[:, None, :].chunk(6, dim=-1)
        keep = None if keys is None else keys[:, :, None].to(x.dtype)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1, keys)
        return x + g2 * self.ff(self.norm2(x) * (1 + s2) + b2, keep)


class VisitTransformer(nn.Module):
    def __init__(
        self,
        in_channels: int,
        *,
        width: int = 64,
        depth: int = 3,
        heads: int = 4,
        dropout: float = 0.0,
        time_embed_dim: int = 64,
        self_condition: bool = False,
        position: bool = False,
        patch: int = 1,
    ):
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be at least 1 visit per token, got {patch}")
        self.patch = patch
        while width % heads:
            heads //= 2
        self.in_channels = in_channels
        self.self_condition = self_condition  # input = [x_t, the previous x0 estimate] (zeros when none)
        self.takes_visits = True  # the schedule and the sampler pass `visits`
        self.time_embed_dim = time_embed_dim
        emb = 4 * time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.embed = nn.Linear(in_channels * (2 if self_condition else 1) * patch, width)
        # the visit's index, sinusoidal, added to its token: attention alone cannot tell a first
        # visit from a later one. Taken per patient ([B, L, .]), so DP-SGD's per-sample gradients cover it
        self.visit_index = nn.Linear(time_embed_dim, width) if position else None
        self.blocks = nn.ModuleList([Block(width, heads, emb, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb, 2 * width)
        self.out = nn.Linear(width, in_channels * patch)
        for layer in (self.film, self.out):  # the network starts by predicting zeros
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None = None, visits: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.self_condition:
            x = torch.cat([x, torch.zeros_like(x) if x_self is None else x_self.to(x.dtype)], dim=1)
        keys = None if visits is None else visits.to(device=x.device, dtype=torch.bool)
        if keys is not None:  # a patient with no visit (never drawn) still reads its first position
            keys = keys.clone()
            keys[:, 0] = True
        L = x.shape[-1]
        if self.patch > 1:
            x, keys = self._patches(x, keys)
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.time_embed_dim)))
        h = self.embed(x.transpose(1, 2))  # [B, tokens, width]
        if self.visit_index is not None:
            index = timestep_embedding(torch.arange(x.shape[-1], device=x.device), self.time_embed_dim)
            h = h + self.visit_index(index.to(h.dtype).expand(x.shape[0], -1, -1))
        for block in self.blocks:
            h = block(h, emb, keys)
        shift, scale = self.film(emb)[:, None, :].chunk(2, dim=-1)
        out = self.out(self.norm(h) * (1 + scale) + shift)  # [B, tokens, C * patch]
        B, T, _ = out.shape
        return (
            out.view(B, T, self.patch, self.in_channels).permute(0, 3, 1, 2).reshape(B, self.in_channels, T * self.patch)[..., :L]
        )

    def _patches(self, x: torch.Tensor, keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, C, L] -> [B, C * patch, tokens] (a token's visits side by side, padding zeroed) and
        the token mask (True where a token holds a visit)."""
        B, C, L = x.shape
        pad = -L % self.patch
        if keys is not None:
            x = x * keys[:, None, :].to(x.dtype)
        x = F.pad(x, (0, pad))
        tokens = x.view(B, C, -1, self.patch).permute(0, 3, 1, 2).reshape(B, self.patch * C, -1)
        if keys is not None:
            keys = F.pad(keys, (0, pad)).view(B, -1, self.patch).any(-1)
        return tokens, keys
