"""Reverse process: DDPM ancestral and DDIM sampling over an evenly respaced step subsequence.

`sample_loop(model, diffusion, shape, ...)` is the whole loop: model(x, t) -> x0 estimate (from
the predicted eps or v) -> clip to [-1, 1] -> project static channels -> step. A self-conditioned
network also gets the previous step's x0 estimate. Noise comes from a CPU torch.Generator,
so a seed gives the same patients on CPU and GPU.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from diffusion.schedule import SELF_COND_BOUND, GaussianDiffusion


def respaced_steps(total: int, steps: int) -> list[int]:
    """`steps` timesteps from total-1 down to 0, evenly spaced (all of them if steps >= total)."""
    steps = max(1, min(steps, total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, steps)}, reverse=True)


@torch.no_grad()
def sample_loop(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    shape: tuple[int, int, int],
    *,
    method: str = "ddim",
    steps: int = 100,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    static_channels: list[int] | None = None,
    device: torch.device | str = "cpu",
    clip: bool | list[float] = True,
    known: tuple[list[int], torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise pure noise of `shape` [B, C, L] into x0 samples (float32, on CPU).

    `known=(channels, values [B, k, L])` fixes those channels (inpainting): their x0 is the
    given value and x_t is re-noised from it at every step, so the rest is generated
    conditionally on them (used for the number of visits, drawn from the real distribution).
    `clip`: True clips x0 estimates to [-1, 1]; a list gives each channel its own bound.
    """
    if method not in ("ddim", "ddpm"):
        raise ValueError(f"unknown sampling method {method!r} (ddim or ddpm)")
    device = torch.device(device)
    gen = generator or torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    abar = diffusion.alphas_cumprod
    seq = respaced_steps(diffusion.steps, steps)
    bounds = None
    if clip is not False:
        per_channel = [1.0] * shape[1] if clip is True else list(clip)
        bounds = torch.tensor(per_channel, dtype=torch.float32, device=device).view(1, -1, 1)
    if known is not None:
        k_idx = torch.as_tensor(known[0], device=device)
        k_val = known[1].to(device)
    self_condition = bool(getattr(model, "self_condition", False))
    x_self = torch.zeros(shape, device=device) if self_condition else None
    for i, t in enumerate(seq):
        t_prev = seq[i + 1] if i + 1 < len(seq) else -1
        a_t = float(abar[t])
        a_prev = float(abar[t_prev]) if t_prev >= 0 else 1.0
        tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
        out = model(x, tt, x_self) if self_condition else model(x, tt)
        x0, _ = diffusion.x0_and_eps(out.float(), x, a_t)
        if bounds is not None:
            x0 = torch.maximum(torch.minimum(x0, bounds), -bounds)
        if static_channels:
            idx = torch.as_tensor(static_channels, device=device)
            x0[:, idx, :] = x0[:, idx, :].mean(dim=-1, keepdim=True)
        if known is not None:
            x0[:, k_idx, :] = k_val
        if self_condition:
            x_self = x0.clamp(-SELF_COND_BOUND, SELF_COND_BOUND)
        eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        if t_prev < 0:
            x = x0
        elif method == "ddim":
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
            x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
            if sigma > 0:
                x = x + sigma * torch.randn(shape, generator=gen).to(device)
        else:  # ancestral: the posterior q(x_prev | x_t, x0) of the (respaced) chain
            beta = 1 - a_t / a_prev
            mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x
            var = beta * (1 - a_prev) / (1 - a_t)
            x = mean + var**0.5 * torch.randn(shape, generator=gen).to(device)
        if known is not None and t_prev >= 0:
            noise = torch.randn(k_val.shape, generator=gen).to(device)
            x[:, k_idx, :] = a_prev**0.5 * k_val + (1 - a_prev) ** 0.5 * noise
        if progress is not None:
            progress(i + 1, len(seq))
    return x.float().cpu()
