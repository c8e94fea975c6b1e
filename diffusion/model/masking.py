"""Masked (absorbing-state) diffusion for the temporal discrete channels, beside the Gaussian process.

Under `diffusion.discrete="masked"` every temporal binary, missingness and repeat channel and every
temporal categorical column is, at each visit, either revealed in x_t (its code, -/+ scale) or
masked (all its channels 0). A group is masked with probability 1 - alpha-bar(t), so labels come
out of the mask as the numbers come out of the noise. The network reads the groups as class logits
(`diffusion.model.discrete.DiscreteHeads`) and is scored by cross-entropy where they are masked.

Sampling reveals a masked group between t and s with probability (abar(s) - abar(t)) / (1 - abar(t)),
drawing its class from the predicted probabilities: a visit's label is drawn once, given every label
revealed before it, and is never redrawn (the absorbing process of MDLM, Sahoo et al. 2024), so
labels are a sample, not a rounded mean. The visits of a patient revealed at the same step share
one uniform draw, so those the network gives the same probabilities get the same class (a step
reveals several visits at once; drawn independently, a persistent label would flicker among
them). Static groups stay Gaussian (the projection holds them constant over time).
Tensors are [batch, channels, time].
"""

from __future__ import annotations

import torch

from diffusion.model.discrete import DiscreteHeads


class MaskedGroups:
    """The temporal discrete groups of `heads` (groups with a channel in `static` are left out)."""

    def __init__(self, heads: DiscreteHeads, static: list[int]):
        static_set = set(static)
        self.heads = heads
        self.groups = [g for g in heads.groups if not static_set & set(g)]
        self.channels = [i for g in self.groups for i in g]
        # each group's rows in `channels`-ordered tensors, and the group of each channel there
        ends = torch.tensor([len(g) for g in self.groups]).cumsum(0).tolist()
        self.spans = [(end - len(g), end) for g, end in zip(self.groups, ends)]
        self.group_of = torch.tensor([k for k, g in enumerate(self.groups) for _ in g], dtype=torch.long)
        self.first = torch.tensor([g[0] for g in self.groups], dtype=torch.long)  # the channel whose noise hides a group

    def __bool__(self) -> bool:
        return bool(self.groups)

    def hide(
        self, x0: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t with the masked groups at 0, the masked share [B, C, L] of each channel: 1 where masked).
        A group is masked when Phi(its first channel's noise) < 1 - abar: that noise is otherwise
        unused, and its normal CDF is uniform, so the draw follows the batch's seeded noise."""
        uniform = torch.special.ndtr(noise[:, self.first.to(noise.device)].float())  # [B, G, L]
        hidden_groups = uniform < (1 - a.view(-1, 1, 1).float())
        hidden = torch.zeros_like(x_t)
        hidden[:, self.channels] = hidden_groups[:, self.group_of.to(noise.device)].to(x_t.dtype)
        return _masked(x0, x_t, hidden, self.channels), hidden

    def start(self, x: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor] | None) -> "Revealing":
        """The sampler's state for x_T: every group masked (written into `x`), except groups whose
        channels are all `known`."""
        return Revealing(self, x, known)


def _masked(x0: torch.Tensor, x_t: torch.Tensor, hidden: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """x_t with `channels` replaced by x0's codes where revealed and 0 where `hidden`."""
    out = x_t.clone()
    out[:, channels] = x0[:, channels] * (1 - hidden[:, channels])
    return out


class Revealing:
    """The masked groups' codes while sampling: `reveal` draws some from the network's logits at each
    step, `apply` writes the codes (0 where still masked) into x_t."""

    def __init__(self, masked: MaskedGroups, x: torch.Tensor, known):
        (B, _, L), device = x.shape, x.device
        self.masked, self.scale = masked, masked.heads.scale
        self.codes = torch.zeros((B, len(masked.channels), L), device=device)
        self.hidden = torch.ones((B, len(masked.groups), L), dtype=torch.bool, device=device)
        if known is not None:  # a group given whole (inpainted) is revealed at its given codes
            position = {int(c): k for k, c in enumerate(known[0].tolist())}
            for k, (g, (lo, hi)) in enumerate(zip(masked.groups, masked.spans)):
                if all(c in position for c in g):
                    self.codes[:, lo:hi] = known[1][:, [position[c] for c in g]].to(device)
                    self.hidden[:, k] = False
        self.apply(x)

    def reveal(self, out: torch.Tensor, a_t: float, a_prev: float, gen: torch.Generator, *, into: torch.Tensor) -> None:
        """Reveal each masked group with probability (a_prev - a_t) / (1 - a_t), its class drawn from
        the logits `out` [B, C, L] (the network's raw output; a_prev = 1 reveals them all); then the
        codes are written into x_prev `into`."""
        B, _, L = out.shape
        p_reveal = 1.0 if a_prev >= 1.0 else max(0.0, (a_prev - a_t) / max(1e-12, 1.0 - a_t))
        now = self.hidden & (torch.rand((B, len(self.masked.groups), L), generator=gen).to(out.device) < p_reveal)
        for k, (g, (lo, hi)) in enumerate(zip(self.masked.groups, self.masked.spans)):
            # one uniform per patient and step for all its visits revealed now: each visit's class has the
            # network's probability, and visits given the same probabilities draw the same class
            u = torch.rand((B, 1, 1), generator=gen).to(out.device)
            logits = out[:, g].float()
            if len(g) == 1:
                drawn = torch.where(u < torch.sigmoid(logits), self.scale, -self.scale)
            else:
                below = torch.softmax(logits, dim=1).cumsum(dim=1) < u  # inverse CDF over the categories
                cls = below.sum(dim=1).clamp_max(len(g) - 1)  # [B, L]
                drawn = self.scale * (2 * torch.nn.functional.one_hot(cls, len(g)).permute(0, 2, 1).float() - 1)
            self.codes[:, lo:hi] = torch.where(now[:, k : k + 1], drawn.to(self.codes.dtype), self.codes[:, lo:hi])
        self.hidden &= ~now
        self.apply(into)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x with the masked groups' channels at their codes (0 where still masked), in place."""
        x[:, self.masked.channels] = self.codes
        return x
