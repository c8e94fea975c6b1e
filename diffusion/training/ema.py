"""Exponential moving average of a model's parameters: the weights that are checked, kept and sampled."""

from __future__ import annotations

import copy

import torch


class EMA:
    """A frozen copy of `model` whose parameters follow its own with `decay` (buffers copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short warm-up so early EMA is not stale
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """The averaged weights as cloned CPU tensors."""
        return {k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()}
