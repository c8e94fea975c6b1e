"""Training steps per second of the denoiser alone, per engine and tensor shape.

    python benchmarks/bench_train_speed.py [--cases 70x20,70x72,70x500] [--patients 2000]
        [--engine NAME=key=value;key=value ...] [--seconds 20] [--threads 2]

A case is CHANNELSxVISITS. Each engine (default: today's defaults, with `model.patch=0` resolved
from the case's visits as `fit` resolves it) takes AdamW steps on batches of `train.batch_size`
random patients of that shape (lengths drawn uniformly from half to all the visits, as
`bench_scale.py`'s extracts; the auto patch reads their median), half of them self-conditioned as in training: the step the training
loop repeats, without data loading or evaluation. After 3 warm-up steps, steps are timed for
`--seconds`; printed: steps/s and milliseconds per step. One engine and case at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step_rate(channels: int, visits: int, overrides: list[str], patients: int, seconds: float) -> tuple[float, str]:
    """(steps/s, the engine's description) for one engine on one shape."""
    from diffusion.config import Config, resolve_network
    from diffusion.model.build import build_denoiser
    from diffusion.model.schedule import GaussianDiffusion
    from diffusion.training.update import PlainUpdate

    cfg = Config().with_overrides(overrides)
    cfg = resolve_network(cfg, patients, 0.75 * visits)  # 0.75 x visits: the lengths' median
    torch.manual_seed(0)
    net = build_denoiser(channels, cfg.model)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    update = PlainUpdate(net, torch.optim.AdamW(net.parameters(), lr=cfg.train.learning_rate), cfg.train.grad_clip)
    gen = torch.Generator().manual_seed(0)
    B = cfg.train.batch_size
    x0 = torch.randn(B, channels, visits, generator=gen).clamp(-1, 1)
    lengths = torch.randint(max(1, visits // 2), visits + 1, (B,), generator=gen)
    visits_mask = torch.arange(visits)[None, :] < lengths[:, None]
    mask = visits_mask[:, None, :].expand_as(x0).float()

    def one() -> None:
        t = torch.randint(0, diffusion.steps, (B,), generator=gen)
        self_cond = torch.rand(B, generator=gen) < 0.5
        losses = diffusion.training_losses(net, x0, t, mask, self_cond=self_cond, visits=visits_mask)
        update.optimize(losses, None)

    for _ in range(3):
        one()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one()
        done += 1
    m = cfg.model
    what = f"{m.kind}, width {m.base_channels}" + (f", {m.patch} visit(s) per token" if m.kind == "transformer" else "")
    return done / (time.perf_counter() - start), what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="70x20,70x72,70x500")
    ap.add_argument("--patients", type=int, default=2000, help="training patients the auto width is read for")
    ap.add_argument("--engine", action="append", default=[], metavar="NAME=SETTINGS")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engines = [e.split("=", 1) for e in args.engine] or [["today", ""]]
    print(f"{'case':>10} {'engine':>10} {'steps/s':>9} {'ms/step':>9}  network")
    for case in args.cases.split(","):
        channels, visits = (int(v) for v in case.split("x"))
        for name, spec in engines:
            rate, what = step_rate(channels, visits, [s for s in spec.split(";") if s], args.patients, args.seconds)
            print(f"{case:>10} {name:>10} {rate:9.2f} {1000 / rate:9.1f}  {what}", flush=True)


if __name__ == "__main__":
    main()
