"""Differentially private training (DP-SGD) of the U-Net, through Opacus.

This module owns the privacy mechanics of a DP run and nothing else: Poisson sampling of
batches, the noise multiplier that makes a planned number of steps spend a target
(epsilon, delta) under the RDP accountant, per-sample gradients (Opacus' GradSampleModule),
per-sample clipping plus Gaussian noise (Opacus' DPOptimizer) and the running epsilon. The
caller's loop keeps the rest (learning rate, EMA, checkpoints, validation). The model handed
to `DPTrainer` is never changed: the trainer drives a copy of its module tree that shares its
parameter tensors, with each nn.MultiheadAttention rebuilt from nn.Linear layers Opacus can
take per-sample gradients of, so the model passed in (its state_dict, an EMA of it) always
holds the current weights under the plain names.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from torch import nn


def default_delta(n: int) -> float:
    """min(1e-5, 1 / (10 n)): delta must sit well below 1/n, the rate at which leaking one whole record is allowed."""
    return min(1e-5, 1.0 / (10 * max(int(n), 1)))


def poisson_indices(n: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """A Poisson-sampled batch: each of the n records independently with probability
    `sample_rate`, as the accountant assumes. Sorted int64 indices on the CPU; may be empty."""
    return torch.nonzero(torch.rand(n, generator=generator) < sample_rate).flatten()


class _SelfAttention(nn.Module):
    """nn.MultiheadAttention's unmasked self-attention (batch_first) computed from two nn.Linear
    layers that hold the original module's own parameter tensors.

    Opacus cannot hook nn.MultiheadAttention (its projections run inside F.multi_head_attention_forward),
    and its DPMultiheadAttention merges heads in the wrong order when batch_first=True.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not (
            mha.batch_first
            and mha._qkv_same_embed_dim
            and mha.in_proj_bias is not None
            and mha.bias_k is None
            and not mha.add_zero_attn
        ):
            raise ValueError(
                "DP training supports nn.MultiheadAttention only with batch_first=True, biases, "
                "equal query/key/value sizes and no add_bias_kv / add_zero_attn"
            )
        e = mha.embed_dim
        self.num_heads, self.dropout = mha.num_heads, mha.dropout
        # the same Parameter objects: the caller's optimizer and model see every update
        self.in_proj = nn.Linear(e, 3 * e, device="meta")
        self.in_proj.weight, self.in_proj.bias = mha.in_proj_weight, mha.in_proj_bias
        self.out_proj = nn.Linear(e, e, device="meta")
        self.out_proj.weight, self.out_proj.bias = mha.out_proj.weight, mha.out_proj.bias

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None, **kwargs):
        """(output [B, L, E], None): the attention weights are never returned."""
        if not (query is key is value) or key_padding_mask is not None or attn_mask is not None or kwargs.get("is_causal"):
            raise NotImplementedError("under DP only unmasked self-attention (query is key is value) is supported")
        b, length, e = query.shape
        # nn.MultiheadAttention's packed projection: [q | k | v], each split into heads
        q, k, v = self.in_proj(query).view(b, length, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(h.transpose(1, 2).reshape(b, length, e)), None


def _dp_view(model: nn.Module) -> nn.Module:
    """A copy of `model`'s module tree sharing its parameters and buffers, each
    nn.MultiheadAttention replaced by `_SelfAttention`."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # deepcopy keeps these objects as they are
    view = copy.deepcopy(model, memo)
    for module in list(view.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, _SelfAttention(child))
    return view


def plain_state_dict(wrapped: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `DPTrainer.model` (or of any module `_dp_view` made) under the plain
    Unet1D's names: no `_module.` prefix, attention as nn.MultiheadAttention's in_proj_weight /
    in_proj_bias / out_proj.*. Loads into `build_unet(...)` with strict=True. Cloned CPU tensors."""
    module = getattr(wrapped, "_module", wrapped)
    state = {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}
    for name, m in module.named_modules():
        if isinstance(m, _SelfAttention):
            for kind in ("weight", "bias"):
                state[f"{name}.in_proj_{kind}"] = state.pop(f"{name}.in_proj.{kind}")
    return state


class DPTrainer:
    """DP-SGD for `model` with `optimizer` (built over `model.parameters()`, e.g. AdamW).

    Each step: draw `idx = poisson_indices(n, trainer.sample_rate, gen)`, compute the per-sample
    losses [B] with `trainer.model` (e.g. `diffusion.training_losses(trainer.model, ...)`), and
    call `trainer.step(losses)`; an empty batch is `trainer.step(None)`. At most `steps` steps
    are allowed: with them, (epsilon, delta) = (target_epsilon, delta) is spent at most.
    `model` keeps the trained weights; move it to its device before building the trainer.

    `noise_multiplier` overrides the one computed from the target (0 for tests: no privacy).
    `seed` seeds the noise; the guarantee holds only while the noise is unknown, so a release
    should pass seed=None (fresh entropy) or keep the seed secret.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        n: int,
        batch_size: int,
        steps: int,
        target_epsilon: float,
        target_delta: float = 0.0,
        max_grad_norm: float = 1.0,
        noise_multiplier: float | None = None,
        seed: int | None = 0,
    ):
        if getattr(model, "position", None) is not None:
            raise ValueError(
                "model.position is not supported under DP with the U-Net (model.kind=unet): its features are one "
                "tensor shared by the whole batch, so per-sample gradients cannot be taken through it (the "
                "transformer's visit index is taken per patient and is supported)"
            )
        if n < 1 or batch_size < 1 or steps < 1 or max_grad_norm <= 0:
            raise ValueError("n, batch_size, steps and max_grad_norm must be positive")
        self.n, self.steps, self.steps_taken = n, steps, 0
        self.sample_rate = min(1.0, batch_size / n)
        self.target_epsilon = target_epsilon
        self.delta = target_delta or default_delta(n)
        if noise_multiplier is None:
            noise_multiplier = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=self.delta,
                sample_rate=self.sample_rate,
                steps=steps,
                accountant="rdp",
            )
        self.noise_multiplier = float(noise_multiplier)
        # loss_reduction="sum": backward of the summed per-sample losses gives exact per-sample gradients
        self.model = GradSampleModule(_dp_view(model), batch_first=True, loss_reduction="sum").train()
        # GradSampleModule forwards only submodules; training_losses reads this flag off the model it is given
        self.model.self_condition = getattr(model, "self_condition", False)
        self.model.takes_visits = getattr(model, "takes_visits", False)
        self.generator = torch.Generator(device=next(model.parameters()).device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        # loss_reduction="mean": (sum of clipped per-sample gradients + noise) / expected batch size
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=min(batch_size, n),
            loss_reduction="mean",
            generator=self.generator,
        )
        self.accountant = RDPAccountant()

    def step(self, losses: torch.Tensor | None) -> None:
        """Backward of the per-sample losses [B] of `self.model`, then one clipped, noised optimizer
        step, counted by the accountant. An empty Poisson batch (losses of size 0, or None when
        the forward was skipped) is a noise-only update, counted like any other step."""
        if self.steps_taken >= self.steps:
            raise RuntimeError(
                f"all {self.steps} planned DP steps are taken: another would spend more than epsilon {self.target_epsilon}"
            )
        if losses is not None and losses.requires_grad:
            losses.sum().backward()  # an empty batch's forward gives empty per-sample gradients
        else:
            for p in self.optimizer.params:
                p.grad_sample = p.new_zeros((0, *p.shape))  # no records: the clipped sum is zero
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps_taken += 1

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at `delta` (default: the trainer's delta); 0 before any step."""
        return float(self.accountant.get_epsilon(delta or self.delta))

    def state_dict(self) -> dict:
        """What a resumed run needs beyond the model and optimizer: accountant, noise generator, steps."""
        return {
            "accountant": self.accountant.state_dict(),
            "generator": self.generator.get_state(),
            "steps_taken": self.steps_taken,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["noise_multiplier"], state["sample_rate"]) != (self.noise_multiplier, self.sample_rate):
            raise ValueError("the checkpoint was taken with another noise multiplier or sample rate")
        self.accountant.load_state_dict(state["accountant"])
        self.generator.set_state(state["generator"])
        self.steps_taken = int(state["steps_taken"])
