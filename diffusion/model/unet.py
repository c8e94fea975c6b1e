"""A 1-D temporal U-Net: (x_t [B, C, L], t [B]) -> the denoiser's output (eps or v) [B, C, L].

Residual blocks with GroupNorm, FiLM conditioning on a sinusoidal timestep embedding
(scale and shift after the second norm), strided-conv downsampling, nearest upsampling,
skip connections, self-attention over time at the coarsest level, and (``position``) the visit
index as sinusoidal features added after the first convolution. Any length L works:
the input is padded to the multiple the downsampling needs and the output cropped back.
The network knows nothing about noise schedules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (float or int) steps t [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(ch: int) -> nn.GroupNorm:
    groups = 8
    while ch % groups:
        groups //= 2
    return nn.GroupNorm(groups, ch)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class TimeAttention(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        while ch % heads:
            heads //= 2
        self.norm = _norm(ch)
        self.attn = nn.MultiheadAttention(ch, heads, batch_first=True)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # [B, L, C]
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2)


class Unet1D(nn.Module):
    def __init__(
        self,
        in_channels: int,
        *,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        blocks_per_level: int = 2,
        attention: bool = True,
        dropout: float = 0.0,
        time_embed_dim: int = 128,
        self_condition: bool = False,
        position: bool = False,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.self_condition = self_condition  # input = [x_t, the previous x0 estimate] (zeros when none)
        self.factor = 2 ** (len(channel_mults) - 1)
        self.time_embed_dim = time_embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embed_dim, 4 * time_embed_dim), nn.SiLU(), nn.Linear(4 * time_embed_dim, 4 * time_embed_dim)
        )
        emb = 4 * time_embed_dim
        self.init = nn.Conv1d(in_channels * (2 if self_condition else 1), base_channels, 3, padding=1)
        # the visit index (sinusoidal features, any length) added to the first features: convolutions
        # and attention alone see only relative order, and a trajectory's first visits often differ
        self.position = nn.Conv1d(time_embed_dim, base_channels, 1) if position else None
        self.down = nn.ModuleList()
        skip_ch = [base_channels]
        ch = base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(blocks_per_level):
                self.down.append(ResBlock(ch, base_channels * mult, emb, dropout))
                ch = base_channels * mult
                skip_ch.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                skip_ch.append(ch)
        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, emb, dropout), TimeAttention(ch) if attention else nn.Identity(), ResBlock(ch, ch, emb, dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(blocks_per_level + 1):
                self.up.append(ResBlock(ch + skip_ch.pop(), base_channels * mult, emb, dropout))
                ch = base_channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(ch, ch, 3, padding=1)))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv1d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, x_self: torch.Tensor | None = None) -> torch.Tensor:
        length = x.shape[-1]
        if self.self_condition:
            x = torch.cat([x, torch.zeros_like(x) if x_self is None else x_self.to(x.dtype)], dim=1)
        pad = (-length) % self.factor
        if pad:
            x = F.pad(x, (0, pad))
        emb = self.time_mlp(timestep_embedding(t, self.time_embed_dim))
        h = self.init(x)
        if self.position is not None:
            steps = torch.arange(h.shape[-1], device=h.device)
            h = h + self.position(timestep_embedding(steps, self.time_embed_dim).T.unsqueeze(0).to(h.dtype))
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)[..., :length]


def build_unet(in_channels: int, cfg) -> Unet1D:
    """The U-Net from a ModelConfig's arguments (`diffusion.model.build_denoiser` chooses it)."""
    return Unet1D(
        in_channels,
        base_channels=cfg.base_channels,
        channel_mults=tuple(cfg.channel_mults),
        blocks_per_level=cfg.blocks_per_level,
        attention=cfg.attention,
        dropout=cfg.dropout,
        time_embed_dim=cfg.time_embed_dim,
        self_condition=cfg.self_condition,
        position=cfg.position,
    )
