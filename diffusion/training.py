"""The training loop: AdamW, warm-up, gradient clipping, EMA, bf16 autocast on CUDA, early
stopping, resumable checkpoints, a progress bar; data-parallel (DDP) when the process is one of
a torch.distributed group (`diffusion.distributed` starts one under torchrun).

Training plans its steps (max_steps, at most max_epochs passes over the training patients)
and the learning rate follows that plan, never the clock, so a seeded run reproduces. At each
check it scores the EMA weights on the validation patients (loss) and, given a memorisation
probe, on how often generated patients lie nearer the training set (`diffusion.memorisation`).
A checkpoint whose share exceeds `max_train_dcr_share` is not admissible; the best admissible
one by validation loss is kept (the least memorising one when none is admissible), and
training stops after `patience` checks without a better one. `max_minutes` is a safety cap.

No logger is imported here: pass `callback(event, payload)` to receive "step", "eval" and
"checkpoint" events (the Prefect task turns them into MLflow metrics).

Under DDP every process draws its share of the global batch from its own generator and the
gradients are averaged; the first process (rank 0) alone checks, keeps the best checkpoint,
writes checkpoints and calls back, and its decision to stop reaches the others each step.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion.config import TrainConfig
from diffusion.encoding import Encoded
from diffusion.schedule import GaussianDiffusion

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def world() -> tuple[int, int]:
    """(rank, world size) of this process's torch.distributed group; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _agree(code: int, device: torch.device) -> int:
    """Rank 0's `code` on every rank (a stop decision must be the same everywhere, or the group hangs)."""
    if world()[1] == 1:
        return code
    flag = torch.tensor([code], device=device)
    torch.distributed.broadcast(flag, 0)
    return int(flag.item())


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda was asked for, but no CUDA device is available")
    return torch.device(name)


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


class EMA:
    """Exponential moving average of a model's parameters (buffers copied)."""

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


def split_validation(n: int, fraction: float, seed: int, minimum: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patient indices for training and for validation (seeded, disjoint): `fraction` of the
    patients, at least `minimum`, at most a quarter; none below 10 patients."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = min(max(int(round(n * fraction)), minimum), n // 4) if n >= 10 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def planned_steps(cfg: TrainConfig, patients: int) -> int:
    """max_steps, or fewer when max_epochs passes over `patients` come first."""
    batch = max(1, min(cfg.batch_size, patients))
    return max(1, min(cfg.max_steps, math.ceil(cfg.max_epochs * patients / batch)))


def _better(candidate: dict[str, Any], kept: dict[str, Any] | None, limit: float) -> bool:
    """Checkpoint order: admissible (signal <= limit) before not; then lower validation loss
    among admissible ones, lower signal among the rest."""

    def key(h: dict[str, Any]) -> tuple[int, float]:
        share = h.get("train_dcr_share")
        ok = share is None or share <= limit
        return (0, h["val_loss"]) if ok else (1, share)

    return kept is None or key(candidate) < key(kept)


@torch.no_grad()
def validation_loss(
    model, diffusion: GaussianDiffusion, data: Encoded, device: torch.device, *, seed: int = 1234, batch: int = 256
) -> float:
    """Loss on fixed (t, noise) draws: a deterministic yardstick between checkpoints."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    reps = max(1, 256 // max(1, len(data)))  # small validation sets are scored at several t each
    for _ in range(reps):
        for start in range(0, len(data), batch):
            x0 = torch.from_numpy(data.x[start : start + batch])
            mask = torch.from_numpy(data.mask[start : start + batch])
            t = torch.randint(0, diffusion.steps, (x0.shape[0],), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            loss = diffusion.training_losses(model, x0.to(device), t.to(device), mask.to(device), noise.to(device))
            total += float(loss.sum())
            count += x0.shape[0]
    return total / max(count, 1)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a torn checkpoint


def train(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    data: Encoded,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    workdir: Path | None = None,
    resume: bool = True,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
    progress: bool = True,
    probe: Callable[[torch.nn.Module, Encoded, Encoded], Callable[[torch.nn.Module], float]] | None = None,
) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """Train `model` on `data`; return (kept EMA state dict on CPU, TrainResult).

    `probe(model, train, validation)` builds the memorisation signal (a function of the EMA
    network, see `diffusion.memorisation`), used when there are validation patients.
    With `workdir`, a checkpoint is written every `cfg.checkpoint_every` steps and at the end,
    and a later call with the same workdir continues from it (`resume=True`). In a
    torch.distributed group every rank calls this with the same arguments; rank 0's return
    value is the result (the others return their copy of the EMA weights and a partial result).
    """
    device = pick_device(cfg.device)
    rank, size = world()
    main = rank == 0
    if size > 1 and cfg.dp:
        raise ValueError("DP-SGD training runs in one process (train.processes=1).")
    callback = callback if main else None
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    model = model.to(device)
    train_idx, val_idx = split_validation(len(data), cfg.validation_fraction, seed, cfg.min_validation_patients)
    train_data, val_data = data.subset(train_idx), data.subset(val_idx)
    # under DP nothing chooses between checkpoints by patients' data, so nothing is probed
    use_probe = main and probe is not None and len(val_data) and cfg.memorisation_patients and not cfg.dp
    signal = probe(model, train_data, val_data) if use_probe else None
    plan = planned_steps(cfg, len(train_data))
    x_all = torch.from_numpy(train_data.x).to(device)
    m_all = torch.from_numpy(train_data.mask).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    gen = torch.Generator().manual_seed(seed + 7919 * rank)  # each rank draws its own share of the batch
    batch = math.ceil(min(cfg.batch_size, x_all.shape[0]) / size)
    dp = None
    if cfg.dp:
        from diffusion.dp import DPTrainer, poisson_indices  # Opacus is imported only for DP runs

        dp = DPTrainer(
            model,
            opt,
            n=len(train_data),
            batch_size=min(cfg.batch_size, len(train_data)),
            steps=plan,
            target_epsilon=cfg.dp_epsilon,
            target_delta=cfg.dp_delta,
            max_grad_norm=cfg.dp_max_grad_norm,
            seed=seed if cfg.dp_seeded_noise else None,
        )
    result = TrainResult(device=str(device), planned_steps=plan, processes=size)
    best_state: dict[str, torch.Tensor] | None = None
    kept: dict[str, Any] | None = None  # the history entry of the kept checkpoint
    since_best = 0
    step = 0

    ckpt_path = Path(workdir) / CHECKPOINT if workdir else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and ckpt_path.exists():
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            ema.model.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            generators = state.get("generators") or [state["generator"]]
            if len(generators) == size:
                gen.set_state(generators[rank])
            else:  # another world size wrote it: a fresh stream per rank, still seeded
                gen.manual_seed(seed + 7919 * rank + int(state["step"]))
            step = int(state["step"])
            result.history = list(state["history"])
            result.best_val_loss = float(state["best_val_loss"])
            result.best_step = int(state["best_step"])
            kept = next((h for h in result.history if h["step"] == result.best_step), None)
            since_best = int(state.get("since_best", 0))
            best_state = state.get("best") or None
            if dp is not None and state.get("dp"):
                dp.load_state_dict(state["dp"])
            result.resumed_from = step
            log.info("Resumed training from step %d (%s).", step, ckpt_path)
    net = model
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # after the checkpoint is loaded: DDP starts every rank from rank 0's weights
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)
        net.self_condition = getattr(model, "self_condition", False)  # the loss asks the network; DDP does not pass attributes on

    use_amp = cfg.amp and device.type == "cuda" and dp is None
    budget = cfg.max_minutes * 60.0
    start = time.monotonic()
    bar = tqdm(
        total=plan,
        initial=step,
        desc="train",
        unit="step",
        disable=not progress or not main,
        mininterval=1.0 if sys.stderr.isatty() else 15.0,
        dynamic_ncols=True,
    )
    running = None

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        generators = [gen.get_state()]
        if size > 1:  # every rank's stream, so a resumed run draws what it would have drawn
            generators = [None] * size
            torch.distributed.all_gather_object(generators, gen.get_state())
        if not main:
            return
        _save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "ema": ema.model.state_dict(),
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
                "step": step,
                "history": result.history,
                "best_val_loss": result.best_val_loss,
                "best_step": result.best_step,
                "best": best_state or {},
                "since_best": since_best,
                **({"generators": generators} if size > 1 else {}),
                **({"dp": dp.state_dict()} if dp is not None else {}),
            },
        )
        if callback:
            callback("checkpoint", {"step": step, "path": str(ckpt_path)})

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").clone() for k, v in ema.model.state_dict().items()}

    def evaluate() -> None:
        nonlocal best_state, kept, since_best
        if len(val_data):
            val = validation_loss(ema.model, diffusion, val_data, device, seed=seed + 1)
        else:  # no patients to spare: fall back to the training loss
            val = float(running if running is not None else float("inf"))
        entry: dict[str, Any] = {"step": step, "loss": float(running or 0.0), "val_loss": val}
        if signal is not None:
            entry["train_dcr_share"] = signal(ema.model)
        result.history.append(entry)
        # under DP the latest weights are kept: no choice between checkpoints by patients' data
        if dp is not None or _better(entry, kept, cfg.max_train_dcr_share):
            kept, since_best = entry, 0
            result.best_val_loss, result.best_step = val, step
            best_state = snapshot()
        else:
            since_best += 1
        if callback:
            callback("eval", {**entry, "best_val_loss": result.best_val_loss})

    model.train()
    stopped_by = "max_steps" if plan == cfg.max_steps else "max_epochs"
    while step < plan:
        stop = 0
        if cfg.patience and since_best >= cfg.patience and dp is None:
            stop = 1
        elif time.monotonic() - start > budget:
            stop = 2
        stop = _agree(stop, device)
        if stop:
            stopped_by = "patience" if stop == 1 else "time"
            break
        if dp is not None:  # Poisson batches, as the accountant assumes
            idx = poisson_indices(x_all.shape[0], dp.sample_rate, gen).to(device)
        else:
            idx = torch.randint(0, x_all.shape[0], (batch,), generator=gen).to(device)
        t = torch.randint(0, diffusion.steps, (idx.shape[0],), generator=gen).to(device)
        noise = torch.randn((idx.shape[0], *x_all.shape[1:]), generator=gen).to(device)
        lr = cfg.learning_rate * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if cfg.lr_schedule == "cosine":  # by the planned steps, never the clock, so a seeded run reproduces
            lr *= 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / plan)))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            self_cond = torch.rand(idx.shape[0], generator=gen).to(device) < 0.5  # half with a first estimate, half without
            losses = diffusion.training_losses(dp.model if dp is not None else net, x_all[idx], t, m_all[idx], noise, self_cond)
        if dp is not None:  # per-patient clipping and noise replace the global clip
            dp.step(losses)
            loss = losses.detach().mean() if len(losses) else torch.tensor(running or 0.0)
        else:
            loss = losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        ema.update(model, step)
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{running:.4f}", best_val=f"{result.best_val_loss:.4f}")
            if callback:
                callback("step", {"step": step, "loss": running, "lr": lr})
        if step % cfg.eval_every == 0 and main:
            evaluate()
        if step % cfg.checkpoint_every == 0:
            checkpoint()
    bar.close()
    if main and stopped_by != "patience" and (not result.history or result.history[-1]["step"] != step):
        evaluate()
    result.steps = step
    result.seconds = time.monotonic() - start
    if size > 1:  # averaged gradients keep the replicas equal; a difference means a broken group
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(total) for _ in range(size)]
        torch.distributed.all_gather(sums, total)
        result.replicas_agree = bool(all(torch.equal(s, sums[0]) for s in sums))
    result.stopped_by = stopped_by
    checkpoint()
    if best_state is None:
        best_state = snapshot()
    if dp is not None:
        result.dp_epsilon, result.dp_delta, result.dp_noise_multiplier = dp.epsilon(), dp.delta, dp.noise_multiplier
        log.info(
            "DP-SGD: epsilon %.3f spent at delta %.2g (noise multiplier %.3f, sample rate %.4f).",
            result.dp_epsilon,
            result.dp_delta,
            dp.noise_multiplier,
            dp.sample_rate,
        )
    if kept is not None and "train_dcr_share" in kept:
        result.best_dcr_share = kept["train_dcr_share"]
        result.admissible = kept["train_dcr_share"] <= cfg.max_train_dcr_share
    if not main:
        return best_state, result
    log.info(
        "Training stopped by %s after %d of %d planned steps in %.0f s (%.1f steps/s); kept step %d: validation loss %.4f%s.",
        stopped_by,
        step,
        plan,
        result.seconds,
        (step - result.resumed_from) / max(result.seconds, 1e-9),
        result.best_step,
        result.best_val_loss,
        ""
        if result.best_dcr_share is None
        else f", generated patients nearer training than validation {result.best_dcr_share:.3f}"
        + ("" if result.admissible else f" (above {cfg.max_train_dcr_share:g} at every check: the least memorising checkpoint)"),
    )
    return best_state, result
