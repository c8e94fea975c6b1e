"""The denoiser a ModelConfig names: the one place a network is built from its config."""

from __future__ import annotations

from torch import nn

from diffusion.model.transformer import VisitTransformer
from diffusion.model.unet import build_unet


def build_denoiser(in_channels: int, cfg) -> nn.Module:
    """The network of `cfg.kind` ("unet" or "transformer") for `in_channels` channels; the width
    and a transformer's visits per token must be resolved (`diffusion.config.auto_width`, `auto_patch`) before."""
    if cfg.base_channels <= 0:
        raise ValueError("model.base_channels is 0 (auto): resolve it from the number of training patients first")
    if cfg.kind == "unet":
        return build_unet(in_channels, cfg)
    if cfg.kind == "transformer":
        if cfg.patch <= 0:
            raise ValueError("model.patch is 0 (auto): resolve it from the cohort's length first")
        return VisitTransformer(
            in_channels,
            width=2 * cfg.base_channels,
            depth=cfg.depth,
            heads=cfg.heads,
            dropout=cfg.dropout,
            time_embed_dim=cfg.time_embed_dim,
            self_condition=cfg.self_condition,
            position=cfg.position,
            patch=cfg.patch,
        )
    raise ValueError(f"unknown model.kind {cfg.kind!r} (unet or transformer)")
