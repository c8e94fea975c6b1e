"""Which checkpoint is kept: the deterministic validation loss and the admissibility order."""

from __future__ import annotations

from typing import Any

import torch

from diffusion.encoding import Encoded
from diffusion.model.schedule import GaussianDiffusion


@torch.no_grad()
def validation_loss(
    model, diffusion: GaussianDiffusion, data: Encoded, device: torch.device, *, seed: int, batch: int = 256
) -> float:
    """Loss on fixed (t, noise) draws: a deterministic yardstick between checkpoints."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    reps = max(1, 256 // max(1, len(data)))  # small validation sets are scored at several t each
    all_visits = torch.from_numpy(data.visits())
    for _ in range(reps):
        for start in range(0, len(data), batch):
            x0 = torch.from_numpy(data.x[start : start + batch])
            mask = torch.from_numpy(data.mask[start : start + batch])
            visits = all_visits[start : start + batch].to(device)
            t = torch.randint(0, diffusion.steps, (x0.shape[0],), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            loss = diffusion.training_losses(model, x0.to(device), t.to(device), mask.to(device), noise.to(device), visits=visits)
            total += float(loss.sum())
            count += x0.shape[0]
    return total / max(count, 1)


def better(candidate: dict[str, Any], kept: dict[str, Any] | None, limit: float) -> bool:
    """Checkpoint order: admissible (memorisation signal <= limit) before not; then lower
    validation loss among admissible ones, lower signal among the rest."""

    def key(h: dict[str, Any]) -> tuple[int, float]:
        share = h.get("train_dcr_share")
        ok = share is None or share <= limit
        return (0, h["val_loss"]) if ok else (1, share)

    return kept is None or key(candidate) < key(kept)
