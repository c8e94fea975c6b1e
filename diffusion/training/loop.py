"""The training loop: AdamW, warm-up and cosine learning rate, gradient clipping, EMA, bf16
autocast on CUDA, early stopping, resumable checkpoints and a progress bar, as small named steps
(`TrainLoop.run` reads top to bottom). How a batch changes the weights is a strategy
(`diffusion.training.update`: plain or DP-SGD); where the loop runs is a `Group` (one process, or
one rank of a DDP group that `flows.distributed` starts under torchrun).

Training plans its steps (max_steps, at most max_epochs passes over the training patients)
and the learning rate follows that plan, never the clock, so a seeded run reproduces. At each
check it scores the EMA weights on the validation patients (loss) and, given a memorisation
probe, on how often generated patients lie nearer the training set
(`diffusion.training.memorisation`). A checkpoint whose share exceeds `max_train_dcr_share` is
not admissible; the best admissible one by validation loss is kept (the least memorising one
when none is admissible), and training stops after `patience` checks without a better one.
`max_minutes` is a safety cap.

No logger is imported here: pass `callback(event, payload)` to receive "step", "eval" and
"checkpoint" events (the Prefect task turns them into MLflow metrics).

Under DDP every process draws its share of the global batch from its own generator and the
gradients are averaged; the first process (rank 0) alone checks, keeps the best checkpoint,
writes checkpoints and calls back, and its decision to stop reaches the others each step.
"""

from __future__ import annotations

import enum
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion.config import TrainConfig
from diffusion.data.split import split_validation
from diffusion.encoding import Encoded
from diffusion.model.schedule import GaussianDiffusion
from diffusion.training.buckets import LengthBuckets
from diffusion.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from diffusion.training.ema import EMA
from diffusion.training.parallel import Group, pick_device
from diffusion.training.selection import better, validation_loss
from diffusion.training.update import DPUpdate, PlainUpdate

log = logging.getLogger(__name__)

Probe = Callable[[torch.nn.Module, Encoded, Encoded], Callable[[torch.nn.Module], float]]


class StopReason(enum.StrEnum):
    """Why training ended (saved as its value in the model folder and the run)."""

    MAX_STEPS = "max_steps"  # the planned steps were max_steps
    MAX_EPOCHS = "max_epochs"  # the planned steps were max_epochs passes, fewer than max_steps
    MIN_STEPS = "min_steps"  # the planned steps were min_steps, more than max_epochs passes
    PATIENCE = "patience"  # `patience` checks without a better checkpoint
    TIME = "time"  # the max_minutes safety cap


_EARLY = (None, StopReason.PATIENCE, StopReason.TIME)  # the codes ranks agree on: 0, 1, 2


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # {"step", "loss", "val_loss", "train_dcr_share"?}
    best_val_loss: float = float("inf")
    best_step: int = 0
    best_dcr_share: float | None = None  # the kept checkpoint's memorisation signal
    admissible: bool = True  # whether the kept checkpoint passed the memorisation check
    planned_steps: int = 0
    steps: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    device: str = "cpu"
    resumed_from: int = 0
    processes: int = 1  # data-parallel processes (DDP)
    replicas_agree: bool | None = None  # under DDP: every process ended with the same weights
    dp_epsilon: float | None = None  # the privacy budget spent (DP-SGD runs)
    dp_delta: float | None = None
    dp_noise_multiplier: float | None = None

    def summary(self) -> dict[str, Any]:
        """Every field, the loss history included (the release flow draws the loss curve from it):
        losses and memorisation shares per check, aggregates over patients only."""
        return dict(self.__dict__)


PASS_VISITS = 20  # max_epochs counts passes per this many visits of the median patient


def _epoch_steps(cfg: TrainConfig, patients: int, median_visits: float) -> int:
    """The steps of max_epochs passes over `patients`, times median_visits // PASS_VISITS (at least 1)."""
    passes = cfg.max_epochs * max(1, int(median_visits) // PASS_VISITS)
    return math.ceil(passes * patients / max(1, min(cfg.batch_size, patients)))


def planned_steps(cfg: TrainConfig, patients: int, median_visits: float = 0) -> int:
    """max_epochs passes over `patients` (more for long patients: `_epoch_steps`), but at least
    min_steps and at most max_steps."""
    return max(1, min(cfg.max_steps, max(cfg.min_steps, _epoch_steps(cfg, patients, median_visits))))


def plan_reason(cfg: TrainConfig, patients: int, median_visits: float = 0) -> StopReason:
    """Which bound set the plan of `planned_steps`: max_steps, min_steps or max_epochs."""
    if planned_steps(cfg, patients, median_visits) == cfg.max_steps:
        return StopReason.MAX_STEPS
    return StopReason.MIN_STEPS if _epoch_steps(cfg, patients, median_visits) < cfg.min_steps else StopReason.MAX_EPOCHS


def train(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    data: Encoded,
    cfg: TrainConfig,
    *,
    seed: int,
    workdir: Path | None = None,
    resume: bool = True,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
    progress: bool = True,
    probe: Probe | None = None,
) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """Train `model` on `data`; return (kept EMA state dict on CPU, TrainResult).

    `probe(model, train, validation)` builds the memorisation signal (a function of the EMA
    network, see `diffusion.training.memorisation`), used when there are validation patients.
    With `workdir`, a checkpoint is written every `cfg.checkpoint_every` steps and at the end,
    and a later call with the same workdir continues from it (`resume=True`). In a
    torch.distributed group every rank calls this with the same arguments; rank 0's return
    value is the result (the others return their copy of the EMA weights and a partial result).
    """
    loop = TrainLoop(model, diffusion, data, cfg, seed=seed, workdir=workdir, callback=callback, progress=progress, probe=probe)
    return loop.run(resume=resume)


class TrainLoop:
    """One training run's state; `run` is the loop, each step a method (see the module docstring)."""

    def __init__(self, model, diffusion, data: Encoded, cfg: TrainConfig, *, seed: int, workdir, callback, progress, probe):
        self.group = Group.current()
        if self.group.size > 1 and cfg.dp:
            raise ValueError("DP-SGD training runs in one process (train.processes=1).")
        self.cfg, self.diffusion, self.seed, self.progress = cfg, diffusion, seed, progress
        self.device = pick_device(cfg.device)
        self.callback = callback if self.group.main else None
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(seed)
        self.model = model.to(self.device)
        train_idx, val_idx = split_validation(len(data), cfg.validation_fraction, seed, cfg.min_validation_patients)
        self.train_data, self.val_data = data.subset(train_idx), data.subset(val_idx)
        # under DP nothing chooses between checkpoints by patients' data, so nothing is probed
        probed = self.group.main and probe is not None and len(self.val_data) and cfg.memorisation_patients and not cfg.dp
        self.signal = probe(self.model, self.train_data, self.val_data) if probed else None
        self.median_visits = float(np.median(self.train_data.lengths)) if len(self.train_data) else 0.0
        self.plan = planned_steps(cfg, len(self.train_data), self.median_visits)
        self.x = torch.from_numpy(self.train_data.x).to(self.device)
        self.mask = torch.from_numpy(self.train_data.mask).to(self.device)
        self.lengths = torch.from_numpy(self.train_data.lengths).to(self.device)
        self.crop = bool(getattr(model, "takes_visits", False))  # padding changes nothing such a network computes
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.gen = torch.Generator().manual_seed(seed + 7919 * self.group.rank)  # each rank draws its own share of the batch
        self.batch = math.ceil(min(cfg.batch_size, self.x.shape[0]) / self.group.size)
        # a network that sees only the visits trains on batches of similar length (Poisson batches under DP);
        # every rank plans the same global batches and takes its share, so a group trains like one process
        self.buckets = LengthBuckets(self.train_data.lengths, cfg.batch_size, seed) if self.crop and not cfg.dp else None
        self.update = (
            DPUpdate(self.model, self.optimizer, cfg, n=len(self.train_data), steps=self.plan, seed=seed)
            if cfg.dp
            else PlainUpdate(self.model, self.optimizer, cfg.grad_clip)
        )
        self.result = TrainResult(device=str(self.device), planned_steps=self.plan, processes=self.group.size)
        self.ckpt_path = Path(workdir) / CHECKPOINT if workdir else None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.kept: dict[str, Any] | None = None  # the history entry of the kept checkpoint
        self.since_best = 0
        self.step = 0
        self.running: float | None = None  # the smoothed training loss

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, resume: bool) -> tuple[dict[str, torch.Tensor], TrainResult]:
        """Train until the plan is done or a stop reason holds; (kept EMA weights, result)."""
        if self.ckpt_path is not None:
            self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            if resume:
                self.resume()
        self.net = self.update.network(
            self.group.wrap(self.model, self.device)
        )  # after resuming: DDP starts from rank 0's weights
        self.amp = self.cfg.amp and self.device.type == "cuda" and isinstance(self.update, PlainUpdate)
        self.start = time.monotonic()
        bar = self.progress_bar()
        self.model.train()
        stopped_by = plan_reason(self.cfg, len(self.train_data), self.median_visits)
        while self.step < self.plan:
            early = self.early_stop()
            if early is not None:
                stopped_by = early
                break
            lr = self.run_step()
            bar.update(1)
            self.log_step(bar, lr)
            if self.step % self.cfg.eval_every == 0 and self.group.main:
                self.check()
            if self.step % self.cfg.checkpoint_every == 0:
                self.save()
        bar.close()
        return self.finish(stopped_by)

    def early_stop(self) -> StopReason | None:
        """Patience (when the strategy chooses checkpoints) or the time cap, agreed by every rank."""
        code = 0
        if self.cfg.patience and self.since_best >= self.cfg.patience and self.update.chooses_checkpoints:
            code = 1
        elif time.monotonic() - self.start > self.cfg.max_minutes * 60.0:
            code = 2
        return _EARLY[self.group.agree(code, self.device)]

    def run_step(self) -> float:
        """Draw a batch, noise it, take one update and move the EMA; the step's learning rate.
        For a network that sees only the visits, the batch is cut to its longest patient."""
        if self.buckets is not None:
            planned = self.buckets.indices(self.step)
            share = planned[self.group.rank :: self.group.size]
            idx = torch.from_numpy(share if len(share) else planned[:1]).to(self.device)  # never an empty batch
        else:
            idx = self.update.indices(self.x.shape[0], self.batch, self.gen).to(self.device)
        cut = int(self.lengths[idx].max()) if self.crop and idx.numel() else self.x.shape[2]
        x0, mask = self.x[idx, :, :cut], self.mask[idx, :, :cut]
        visits = torch.arange(cut, device=self.device)[None, :] < self.lengths[idx, None]
        t = torch.randint(0, self.diffusion.steps, (idx.shape[0],), generator=self.gen).to(self.device)
        noise = torch.randn(tuple(x0.shape), generator=self.gen).to(self.device)
        lr = self.anneal_lr()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            self_cond = (
                torch.rand(idx.shape[0], generator=self.gen).to(self.device) < 0.5
            )  # half with a first estimate, half without
            losses = self.diffusion.training_losses(self.net, x0, t, mask, noise, self_cond, visits=visits)
        loss = float(self.update.optimize(losses, self.running).detach())
        self.ema.update(self.model, self.step)
        self.step += 1
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        return lr

    def anneal_lr(self) -> float:
        """Linear warm-up, then cosine decay to 5% by the planned steps (never the clock, so a seeded run reproduces)."""
        lr = self.cfg.learning_rate * min(1.0, (self.step + 1) / max(1, self.cfg.warmup_steps))
        if self.cfg.lr_schedule == "cosine":
            lr *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, self.step / self.plan)))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def log_step(self, bar, lr: float) -> None:
        if self.step % self.cfg.log_every == 0:
            bar.set_postfix(loss=f"{self.running:.4f}", best_val=f"{self.result.best_val_loss:.4f}")
            if self.callback:
                self.callback("step", {"step": self.step, "loss": self.running, "lr": lr})

    def progress_bar(self):
        return tqdm(
            total=self.plan,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.progress or not self.group.main,
            mininterval=1.0 if sys.stderr.isatty() else 15.0,
            dynamic_ncols=True,
        )

    # -- checks and the kept checkpoint ----------------------------------------------------------

    def check(self) -> None:
        """Score the EMA weights (validation loss, memorisation signal); keep them if better."""
        if len(self.val_data):
            val = validation_loss(self.ema.model, self.diffusion, self.val_data, self.device, seed=self.seed + 1)
        else:  # no patients to spare: fall back to the training loss
            val = float(self.running if self.running is not None else float("inf"))
        entry: dict[str, Any] = {"step": self.step, "loss": float(self.running or 0.0), "val_loss": val}
        if self.signal is not None:
            entry["train_dcr_share"] = self.signal(self.ema.model)
        self.result.history.append(entry)
        if not self.update.chooses_checkpoints or better(entry, self.kept, self.cfg.max_train_dcr_share):
            self.kept, self.since_best = entry, 0
            self.result.best_val_loss, self.result.best_step = val, self.step
            self.best_state = self.ema.snapshot()
        else:
            self.since_best += 1
        if self.callback:
            self.callback("eval", {**entry, "best_val_loss": self.result.best_val_loss})

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self) -> None:
        """Write the resumable checkpoint (rank 0; every rank's generator state is gathered first)."""
        if self.ckpt_path is None:
            return
        generators = self.group.generator_states(self.gen)
        if not self.group.main:
            return
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.gen.get_state(),
            "step": self.step,
            "history": self.result.history,
            "best_val_loss": self.result.best_val_loss,
            "best_step": self.result.best_step,
            "best": self.best_state or {},
            "since_best": self.since_best,
            **({"generators": generators} if self.group.size > 1 else {}),
            **self.update.state_dict(),
        }
        save_checkpoint(self.ckpt_path, state)
        if self.callback:
            self.callback("checkpoint", {"step": self.step, "path": str(self.ckpt_path)})

    def resume(self) -> None:
        """Continue from the workdir's checkpoint, if there is one."""
        state = load_checkpoint(self.ckpt_path)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        generators = state.get("generators") or [state["generator"]]
        if len(generators) == self.group.size:
            self.gen.set_state(generators[self.group.rank])
        else:  # another world size wrote it: a fresh stream per rank, still seeded
            self.gen.manual_seed(self.seed + 7919 * self.group.rank + int(state["step"]))
        self.step = int(state["step"])
        self.result.history = list(state["history"])
        self.result.best_val_loss = float(state["best_val_loss"])
        self.result.best_step = int(state["best_step"])
        self.kept = next((h for h in self.result.history if h["step"] == self.result.best_step), None)
        self.since_best = int(state.get("since_best", 0))
        self.best_state = state.get("best") or None
        self.update.load_state_dict(state)
        self.result.resumed_from = self.step
        log.info("Resumed training from step %d (%s).", self.step, self.ckpt_path)

    # -- the end -------------------------------------------------------------------------------

    def finish(self, stopped_by: StopReason) -> tuple[dict[str, torch.Tensor], TrainResult]:
        """A last check and checkpoint; the result filled in; (kept EMA weights, result)."""
        result, history = self.result, self.result.history
        if self.group.main and stopped_by != StopReason.PATIENCE and (not history or history[-1]["step"] != self.step):
            self.check()
        result.steps = self.step
        result.seconds = time.monotonic() - self.start
        result.replicas_agree = self.group.replicas_agree(self.model)
        result.stopped_by = stopped_by
        self.save()
        if self.best_state is None:
            self.best_state = self.ema.snapshot()
        self.update.finish(result)
        if self.kept is not None and "train_dcr_share" in self.kept:
            result.best_dcr_share = self.kept["train_dcr_share"]
            result.admissible = self.kept["train_dcr_share"] <= self.cfg.max_train_dcr_share
        if self.group.main:
            self.log_summary()
        return self.best_state, result

    def log_summary(self) -> None:
        r, cfg = self.result, self.cfg
        memorising = ""
        if r.best_dcr_share is not None:
            memorising = f", generated patients nearer training than validation {r.best_dcr_share:.3f}"
            if not r.admissible:
                memorising += f" (above {cfg.max_train_dcr_share:g} at every check: the least memorising checkpoint)"
        log.info(
            "Training stopped by %s after %d of %d planned steps in %.0f s (%.1f steps/s); kept step %d: validation loss %.4f%s.",
            r.stopped_by,
            r.steps,
            r.planned_steps,
            r.seconds,
            (r.steps - r.resumed_from) / max(r.seconds, 1e-9),
            r.best_step,
            r.best_val_loss,
            memorising,
        )
