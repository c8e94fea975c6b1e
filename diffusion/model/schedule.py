"""The forward noise process: beta schedules (float64 math), q(x_t | x_0) and the training loss.

The network is passed into each call (`training_losses(model, x0, t, mask)`); this object
holds only the schedule. Tensors are [batch, channels, time].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffusion.config import DiffusionConfig
from diffusion.model.discrete import DiscreteHeads
from diffusion.model.masking import MaskedGroups


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


DEFAULT = DiffusionConfig()  # the one declaration of each default (`diffusion.config`)
SELF_COND_BOUND = 5.0  # the x0 estimate a self-conditioned network is shown is cut to this range


def visit_kwargs(model, visits: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """`{"visits": visits}` for a network that takes them (`takes_visits`), else nothing."""
    return {"visits": visits} if visits is not None and getattr(model, "takes_visits", False) else {}


class GaussianDiffusion:
    """DDPM forward process; the network predicts the noise ("eps") or the velocity ("v")."""

    def __init__(
        self,
        steps: int = DEFAULT.steps,
        schedule: str = DEFAULT.schedule,
        x0_weight: float = DEFAULT.x0_weight,
        prediction: str = DEFAULT.prediction,
        discrete: DiscreteHeads | None = None,
        masked: MaskedGroups | None = None,
    ):
        if prediction not in ("eps", "v"):
            raise ValueError(f"unknown prediction {prediction!r} (eps or v)")
        self.steps = steps
        self.schedule = schedule
        self.x0_weight = x0_weight
        self.prediction = prediction
        self.discrete = discrete  # None: discrete channels are regressed like the numbers
        self.masked = masked if masked else None  # temporal discrete groups diffused by masking
        self.betas = make_betas(schedule, steps)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)  # float64, [steps]

    @classmethod
    def from_config(
        cls, cfg: DiffusionConfig, discrete_groups: list[list[int]] = (), scale: float = 1.0, static: list[int] = ()
    ) -> "GaussianDiffusion":
        """The process `cfg` declares; under `discrete="logits"` or `"masked"` the channels of
        `discrete_groups` (coded -/+ `scale`) are read as class logits (`diffusion.model.discrete`),
        and under `"masked"` those with no channel in `static` are diffused by masking
        (`diffusion.model.masking`)."""
        heads = DiscreteHeads(list(discrete_groups), scale) if cfg.discrete != "regression" and discrete_groups else None
        masked = MaskedGroups(heads, list(static)) if heads is not None and cfg.discrete == "masked" else None
        return cls(
            steps=cfg.steps,
            schedule=cfg.schedule,
            x0_weight=cfg.x0_weight,
            prediction=cfg.prediction,
            discrete=heads,
            masked=masked,
        )

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha-bar at integer steps t ([B]), shaped [B, 1, 1] on like's device/dtype."""
        table = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device=t.device)
        return table[t].to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def x0_and_eps(self, out: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) estimates from the network's output at alpha-bar `a` (a float or broadcastable);
        discrete channels read as logits give the expected code as x0 when `discrete` is set."""
        if self.prediction == "v":  # x_t = sqrt(a) x0 + sqrt(1-a) eps, v = sqrt(a) eps - sqrt(1-a) x0
            x0, eps = a**0.5 * x_t - (1 - a) ** 0.5 * out, (1 - a) ** 0.5 * x_t + a**0.5 * out
        else:
            x0, eps = (x_t - (1 - a) ** 0.5 * out) / a**0.5, out
        if self.discrete is None:
            return x0, eps
        x0 = self.discrete.x0(out, x0)
        return x0, (x_t - a**0.5 * x0) / (1 - a) ** 0.5

    def training_losses(
        self,
        model,
        x0: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
        visits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked MSE of the prediction (eps or v) plus x0_weight * alpha-bar-weighted masked x0
        reconstruction; [B].

        For a self-conditioned network, `self_cond` ([B] bools; all True when None) picks the
        patients whose network input also carries a first, gradient-free x0 estimate, as the
        sampler will give it; the others get zeros, as at the sampler's first step. `visits` ([B, L]
        bools, True at a recorded visit) reaches a network that takes it (`takes_visits`).
        """
        if noise is None:
            noise = torch.randn_like(x0)
        a = self.abar(t, x0)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        scored = mask  # where the discrete heads' cross-entropy is read
        if self.masked is not None:  # masked groups are scored where they are masked (revealed ones are given)
            x_t, hidden = self.masked.hide(x0, x_t, a, noise)
            scored = mask.clone()
            scored[:, self.masked.channels] = mask[:, self.masked.channels] * hidden[:, self.masked.channels]
        extra = visit_kwargs(model, visits)
        if getattr(model, "self_condition", False):
            first = torch.zeros_like(x_t)
            # the first pass runs on the self-conditioned patients alone: the others' estimate is zeros
            rows = torch.arange(len(x_t), device=x_t.device) if self_cond is None else self_cond.nonzero().flatten()
            if len(rows):
                with torch.no_grad():
                    sub = {k: v[rows] for k, v in extra.items()}
                    est, _ = self.x0_and_eps(model(x_t[rows], t[rows], **sub).float(), x_t[rows], a[rows])
                    first[rows] = est.clamp(-SELF_COND_BOUND, SELF_COND_BOUND).to(first.dtype)
            out = model(x_t, t, first, **extra).float()
        else:
            out = model(x_t, t, **extra).float()
        target = noise if self.prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
        denom = mask.sum(dim=(1, 2)).clamp_min(1.0)
        if self.discrete is None:
            main = ((out - target) ** 2 * mask).sum(dim=(1, 2)) / denom
        else:
            regressed = ((out - target) ** 2 * self.discrete.continuous(mask)).sum(dim=(1, 2))
            main = (regressed + self.discrete.loss(out, x0, scored)) / denom
        if self.x0_weight == 0:
            return main
        x0_hat, _ = self.x0_and_eps(out, x_t, a)
        # weighting by alpha-bar keeps the term finite at high noise, where an eps-based x0_hat is unstable
        x0_loss = (a * (x0_hat - x0) ** 2 * mask).sum(dim=(1, 2)) / denom
        return main + self.x0_weight * x0_loss
