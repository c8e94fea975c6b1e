"""How one batch changes the weights: the strategies the training loop calls.

`PlainUpdate` draws a uniform batch and takes a clipped AdamW step. `DPUpdate` is DP-SGD: Poisson
batches, per-patient clipping and noise (`diffusion.training.dp`), every step counted by the
accountant; under it nothing chooses between checkpoints or stops early by patients' data.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from diffusion.config import TrainConfig

log = logging.getLogger(__name__)


class PlainUpdate:
    """Uniform batches; mean loss, backward, global gradient clipping, optimizer step."""

    chooses_checkpoints = True  # validation picks the kept checkpoint, patience may stop early

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float):
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip

    def network(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module the loss is computed with."""
        return net

    def indices(self, n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, n, (batch,), generator=gen)

    def optimize(self, losses: torch.Tensor, running: float | None) -> torch.Tensor:
        """One step on the per-patient losses [B]; returns the batch's loss."""
        loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def finish(self, result) -> None:
        pass


class DPUpdate:
    """DP-SGD with a noise multiplier that spends (cfg.dp_epsilon, delta) over `steps` Poisson batches."""

    chooses_checkpoints = False  # the latest weights are kept: no choice between checkpoints by patients' data

    def __init__(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, *, n: int, steps: int, seed: int
    ):
        from diffusion.training.dp import DPTrainer  # Opacus is imported only for DP runs

        self.dp = DPTrainer(
            model,
            optimizer,
            n=n,
            batch_size=min(cfg.batch_size, n),
            steps=steps,
            target_epsilon=cfg.dp_epsilon,
            target_delta=cfg.dp_delta,
            max_grad_norm=cfg.dp_max_grad_norm,
            seed=seed if cfg.dp_seeded_noise else None,
        )

    def network(self, net: torch.nn.Module) -> torch.nn.Module:
        return self.dp.model  # per-sample gradients are taken through Opacus' view of the model

    def indices(self, n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
        from diffusion.training.dp import poisson_indices

        return poisson_indices(n, self.dp.sample_rate, gen)  # as the accountant assumes

    def optimize(self, losses: torch.Tensor, running: float | None) -> torch.Tensor:
        self.dp.step(losses)  # per-patient clipping and noise replace the global clip
        return losses.detach().mean() if len(losses) else torch.tensor(running or 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"dp": self.dp.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("dp"):
            self.dp.load_state_dict(state["dp"])

    def finish(self, result) -> None:
        """Record the privacy budget spent on `result` (a TrainResult)."""
        dp = self.dp
        result.dp_epsilon, result.dp_delta, result.dp_noise_multiplier = dp.epsilon(), dp.delta, dp.noise_multiplier
        log.info(
            "DP-SGD: epsilon %.3f spent at delta %.2g (noise multiplier %.3f, sample rate %.4f).",
            result.dp_epsilon,
            result.dp_delta,
            dp.noise_multiplier,
            dp.sample_rate,
        )
