"""The forward noise process: beta schedules (float64 math), q(x_t | x_0) and the training loss.

The network is passed into each call (`training_losses(model, x0, t, mask)`); this object
holds only the schedule. Tensors are [batch, channels, time].
"""

from __future__ import annotations

import math

import numpy as np
import torch


def make_betas(schedule: str, steps: int) -> np.ndarray:
    """Linear (Ho et al.) or cosine (Nichol & Dhariwal) betas, float64, shape [steps]."""
    if schedule == "linear":
        scale = 1000.0 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if schedule == "cosine":
        s = 0.008
        f = lambda t: math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(steps)]
        return np.asarray(betas, dtype=np.float64)
    raise ValueError(f"unknown beta schedule {schedule!r} (cosine or linear)")


class GaussianDiffusion:
    """DDPM forward process with epsilon prediction."""

    def __init__(self, steps: int = 1000, schedule: str = "cosine", x0_weight: float = 0.1):
        self.steps = steps
        self.schedule = schedule
        self.x0_weight = x0_weight
        self.betas = make_betas(schedule, steps)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)  # float64, [steps]

    @classmethod
    def from_config(cls, cfg) -> "GaussianDiffusion":
        return cls(steps=cfg.steps, schedule=cfg.schedule, x0_weight=cfg.x0_weight)

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha-bar at integer steps t ([B]), shaped [B, 1, 1] on like's device/dtype."""
        table = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device=t.device)
        return table[t].to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, x_t)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    def training_losses(self, model, x0: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Masked eps-MSE plus x0_weight * alpha-bar-weighted masked x0 reconstruction; [B]."""
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        eps = model(x_t, t).float()
        denom = mask.sum(dim=(1, 2)).clamp_min(1.0)
        eps_loss = ((eps - noise) ** 2 * mask).sum(dim=(1, 2)) / denom
        if self.x0_weight == 0:
            return eps_loss
        a = self.abar(t, x0)
        x0_hat = self.predict_x0(x_t, t, eps)
        # weighting by alpha-bar keeps the term finite at high noise, where x0_hat is unstable
        x0_loss = (a * (x0_hat - x0) ** 2 * mask).sum(dim=(1, 2)) / denom
        return eps_loss + self.x0_weight * x0_loss
