"""Discrete channels read as class logits (score interpolation, as in CDTD): the network's output on
a binary, missingness or repeat channel is a logit, on a categorical column's one-hot channels one
logit per category.

Training scores them by cross-entropy against the true class; the x0 estimate the sampler and
self-conditioning use is the expected code under the predicted probabilities (each channel coded
-/+ `scale`), so a Gaussian solver moves a category towards what the network believes given the
whole trajectory, and the regression of a +/- code never pulls it to the middle.
Tensors are [batch, channels, time].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class DiscreteHeads:
    """Groups of channel indices (one per binary channel, one per categorical column) coded -/+ scale."""

    def __init__(self, groups: list[list[int]], scale: float):
        self.scale = float(scale)
        self.groups = [list(g) for g in groups]
        self.binary = [g[0] for g in groups if len(g) == 1]
        self.categorical = [list(g) for g in groups if len(g) > 1]
        self.channels = sorted(self.binary + [i for g in self.categorical for i in g])

    def x0(self, out: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """`x0` with its discrete channels replaced by the expected code under `out`'s logits."""
        x0 = x0.clone()
        if self.binary:
            x0[:, self.binary] = self.scale * torch.tanh(out[:, self.binary] / 2)  # = scale * (2 sigmoid - 1)
        for g in self.categorical:
            x0[:, g] = self.scale * (2 * torch.softmax(out[:, g], dim=1) - 1)
        return x0

    def loss(self, out: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked cross-entropy of the true classes (read off `x0`'s signs / largest code), summed
        per patient: [B]. A categorical column counts once per visit, like one channel."""
        total = torch.zeros(out.shape[0], device=out.device, dtype=out.dtype)
        if self.binary:
            b = self.binary
            bce = F.binary_cross_entropy_with_logits(out[:, b], (x0[:, b] > 0).to(out.dtype), reduction="none")
            total = total + (bce * mask[:, b]).sum(dim=(1, 2))
        for g in self.categorical:
            ce = F.cross_entropy(out[:, g], x0[:, g].argmax(dim=1), reduction="none")  # [B, L]
            total = total + (ce * mask[:, g[0]]).sum(dim=1)
        return total

    def continuous(self, mask: torch.Tensor) -> torch.Tensor:
        """`mask` with the discrete channels zeroed: the part the regression loss reads."""
        mask = mask.clone()
        mask[:, self.channels] = 0
        return mask
