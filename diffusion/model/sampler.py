"""Reverse process: DDPM ancestral, DDIM and DPM-Solver++(2M) (ODE or SDE) sampling over a step subsequence.

`sample_loop(model, diffusion, shape, ...)` is the whole loop: model(x, t) -> x0 estimate (from
the predicted eps or v) -> clip to [-1, 1] -> project static channels -> step. A self-conditioned
network also gets the previous step's x0 estimate. Noise comes from a CPU torch.Generator,
so a seed gives the same patients on CPU and GPU.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from diffusion.config import SamplingConfig
from diffusion.model.schedule import SELF_COND_BOUND, GaussianDiffusion, visit_kwargs

DEFAULT = SamplingConfig()  # the one declaration of each default (`diffusion.config`)
METHODS = ("ddim", "ddpm", "dpmpp2m", "dpmpp2m-sde")


def respaced_steps(total: int, steps: int) -> list[int]:
    """`steps` timesteps from total-1 down to 0, evenly spaced (all of them if steps >= total)."""
    steps = max(1, min(steps, total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, steps)}, reverse=True)


def logsnr_steps(alphas_cumprod: np.ndarray, steps: int, min_logsnr: float | None = None) -> list[int]:
    """About `steps` timesteps from the last down to 0, evenly spaced in log-SNR (what a multistep
    solver's extrapolation needs: neighbouring steps of similar size).

    `min_logsnr` starts the even spacing there instead of at the last step's log-SNR (the last step
    still opens the sequence): below it the data is buried in noise, and steps spent there change
    little (a cosine schedule's last steps fall to a log-SNR near -20).
    """
    logsnr = np.log(alphas_cumprod) - np.log1p(-alphas_cumprod)
    low = logsnr[-1] if min_logsnr is None or steps < 3 else max(logsnr[-1], min(min_logsnr, logsnr[0]))
    # with a raised start the last step is one of the `steps`, not beside them
    targets = np.linspace(low, logsnr[0], max(1, steps - int(low > logsnr[-1])))
    picked = {int(np.argmin(np.abs(logsnr - v))) for v in targets}  # log-SNR falls monotonically with t
    return sorted(picked | {0, len(alphas_cumprod) - 1}, reverse=True)


@torch.no_grad()
def sample_loop(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    shape: tuple[int, int, int],
    *,
    method: str = DEFAULT.method,
    steps: int = DEFAULT.steps,
    eta: float = DEFAULT.eta,
    min_logsnr: float | None = DEFAULT.min_logsnr,
    generator: torch.Generator | None = None,
    static_channels: list[int] | None = None,
    device: torch.device | str = "cpu",
    clip: bool | list[float] = True,
    known: tuple[list[int], torch.Tensor] | None = None,
    visits: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise pure noise of `shape` [B, C, L] into x0 samples (float32, on CPU).

    `known=(channels, values [B, k, L])` fixes those channels (inpainting): their x0 is the
    given value and x_t is re-noised from it at every step, so the rest is generated
    conditionally on them (used for the number of visits, drawn from the real distribution).
    `clip`: True clips x0 estimates to [-1, 1]; a list gives each channel its own bound.
    `visits` ([B, L] bools, True at a patient's visits) reaches a network that takes it (`takes_visits`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r} (one of {', '.join(METHODS)})")
    device = torch.device(device)
    gen = generator or torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    abar = diffusion.alphas_cumprod
    multistep = method.startswith("dpmpp2m")
    seq = logsnr_steps(abar, steps, min_logsnr) if multistep else respaced_steps(diffusion.steps, steps)
    extra = visit_kwargs(model, None if visits is None else visits.to(device))
    project = _Projection(shape[1], clip, static_channels, known, device, extra.get("visits"))
    self_condition = bool(getattr(model, "self_condition", False))
    x_self = torch.zeros(shape, device=device) if self_condition else None
    solver = _DPMSolver2M(eta if method == "dpmpp2m-sde" else 0.0, gen) if multistep else None
    masked = diffusion.masked.start(x, project.known) if diffusion.masked is not None else None  # all masked in x
    for i, t in enumerate(seq):
        t_prev = seq[i + 1] if i + 1 < len(seq) else -1
        a_t, a_prev = float(abar[t]), float(abar[t_prev]) if t_prev >= 0 else 1.0
        tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
        out = model(x, tt, x_self, **extra) if self_condition else model(x, tt, **extra)
        x0 = project(diffusion.x0_and_eps(out.float(), x, a_t)[0])
        if self_condition:
            x_self = x0.clamp(-SELF_COND_BOUND, SELF_COND_BOUND)
        if t_prev < 0:
            x = x0
        elif solver is not None:
            x = solver.step(x, x0, a_t, a_prev)
        else:
            x = _transition(method, x, x0, a_t, a_prev, eta, gen)
        if t_prev >= 0:
            project.renoise(x, a_prev, gen)
        if masked is not None:  # the masked groups: some revealed now, from the logits, the rest kept at 0
            masked.reveal(out, a_t, a_prev, gen, into=x)
        if progress is not None:
            progress(i + 1, len(seq))
    return x.float().cpu()


class _Projection:
    """What every x0 estimate is held to: channel bounds, static channels constant over time (at
    their mean over the visits, given them), known channels at their given values (and re-noised
    from them in x_t)."""

    def __init__(self, channels: int, clip, static_channels, known, device: torch.device, visits: torch.Tensor | None = None):
        self.bounds = None
        if clip is not False:
            per_channel = [1.0] * channels if clip is True else list(clip)
            self.bounds = torch.tensor(per_channel, dtype=torch.float32, device=device).view(1, -1, 1)
        self.static = torch.as_tensor(static_channels, device=device) if static_channels else None
        self.known = (torch.as_tensor(known[0], device=device), known[1].to(device)) if known is not None else None
        self.device = device
        # a network that sees only the visits is held to their mean; padding carries no information for it
        self.weights = (
            None if visits is None else (visits.float() / visits.float().sum(-1, keepdim=True).clamp_min(1.0))[:, None, :]
        )

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        if self.bounds is not None:
            x0 = torch.maximum(torch.minimum(x0, self.bounds), -self.bounds)
        if self.static is not None:
            part = x0[:, self.static, :]
            mean = part.mean(dim=-1, keepdim=True) if self.weights is None else (part * self.weights).sum(-1, keepdim=True)
            x0[:, self.static, :] = mean
        if self.known is not None:
            x0[:, self.known[0], :] = self.known[1]
        return x0

    def renoise(self, x: torch.Tensor, a_prev: float, gen: torch.Generator) -> None:
        """Known channels of x_prev drawn from q(x_prev | their x0), in place."""
        if self.known is not None:
            k_idx, k_val = self.known
            noise = torch.randn(k_val.shape, generator=gen).to(self.device)
            x[:, k_idx, :] = a_prev**0.5 * k_val + (1 - a_prev) ** 0.5 * noise


class _DPMSolver2M:
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver in the data (x0)
    prediction, in half-log-SNR time lambda = log(alpha / sigma). It reuses the previous step's x0
    estimate instead of a second network call, so 10-25 steps reach what DDIM needs many more for.
    `eta` 0: the probability-flow ODE, deterministic after the first draw; `eta` 1: the SDE
    (fresh noise at every step, which corrects the denoiser's own errors as it goes)."""

    def __init__(self, eta: float = 0.0, generator: torch.Generator | None = None):
        self.eta, self.gen = eta, generator
        self.prev_x0: torch.Tensor | None = None
        self.prev_h: float | None = None

    def step(self, x: torch.Tensor, x0: torch.Tensor, a_t: float, a_prev: float) -> torch.Tensor:
        s_t, s_prev = (1 - a_t) ** 0.5, (1 - a_prev) ** 0.5
        h = math.log(a_prev**0.5 / s_prev) - math.log(a_t**0.5 / s_t)
        eta_h = self.eta * h
        d = x0
        if self.prev_x0 is not None:  # the second-order correction from the last two x0 estimates
            r = self.prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self.prev_x0
        self.prev_x0, self.prev_h = x0, h
        out = (s_prev / s_t) * math.exp(-eta_h) * x - a_prev**0.5 * math.expm1(-h - eta_h) * d
        if eta_h > 0:
            noise = torch.randn(x.shape, generator=self.gen).to(x.device)
            out = out + s_prev * (-math.expm1(-2 * eta_h)) ** 0.5 * noise
        return out


def _transition(method: str, x: torch.Tensor, x0: torch.Tensor, a_t: float, a_prev: float, eta: float, gen) -> torch.Tensor:
    """x_prev from x_t and the x0 estimate: DDIM (eta scales its noise) or DDPM ancestral."""
    eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
    if method == "ddim":
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        out = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        return out + sigma * torch.randn(x.shape, generator=gen).to(x.device) if sigma > 0 else out
    # ancestral: the posterior q(x_prev | x_t, x0) of the (respaced) chain
    beta = 1 - a_t / a_prev
    mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x
    var = beta * (1 - a_prev) / (1 - a_t)
    return mean + var**0.5 * torch.randn(x.shape, generator=gen).to(x.device)
