"""Speed of the diffusion engine: training steps/s, and patients/s for DDPM vs DDIM sampling.

    python benchmarks/bench_diffusion.py [--train-minutes 3] [--patients 256] [--device cpu|cuda|auto]
    python benchmarks/bench_diffusion.py --model path/to/model-folder   # time sampling only

Trains the default model on the bundled PBC cohort for --train-minutes (so the sampling
comparison is between samplers of a real model), or loads --model, then samples --patients
patients with 500-step ancestral DDPM and with 50-step DDIM (after one untimed warm-up call;
each timed --repeats times, the fastest kept, as timeit does: a shared machine only ever adds
time), and prints patients/s and, for each, the patient-level discriminator AUC against the real
cohort (quality: lower is better) and the mean lag-1 autocorrelation difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-minutes", type=float, default=3.0)
    ap.add_argument("--patients", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ddpm-steps", type=int, default=500)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--model", help="a saved model folder: skip training, time its sampling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eta", type=float, help="DDIM eta (default: the model's sampling.eta)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per sampler; the fastest counts")
    args = ap.parse_args()

    from diffusion.bundle.fit import fit
    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from evaluation import evaluate

    schema = Schema.load(ROOT / "flows/data/pbc.yaml")
    df = pd.read_csv(ROOT / "flows/data/pbcseq.csv")
    cfg = Config().with_overrides(
        [f"train.max_minutes={args.train_minutes}", f"train.device={args.device}", "train.max_steps=1000000"]
    )
    device = "cuda" if (args.device == "auto" and torch.cuda.is_available()) or args.device == "cuda" else "cpu"
    print(
        f"device: {device} ({torch.cuda.get_device_name() if device == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), torch {torch.__version__}"
    )
    if args.model:
        from diffusion.bundle.folder import HealthGymModel

        model = HealthGymModel.load(args.model)
        print(
            f"model: {args.model} ({model.meta.parameters:,} parameters, {len(model.encoder.channels)} channels x {model.encoder.length} steps)"
        )
    else:
        model, result = fit(df, schema, cfg, progress=False)
        rate = result.steps / result.seconds
        print(
            f"training: {result.steps} steps in {result.seconds:.1f} s = {rate:.1f} steps/s "
            f"(batch {cfg.train.batch_size}, {model.meta.parameters:,} parameters, {len(model.encoder.channels)} channels x {model.encoder.length} steps)"
        )
    model.device = torch.device(device)
    model.net.to(device)
    model.sample(8, seed=args.seed, method="ddim", steps=2)  # warm-up: first-call allocations are not sampling speed
    rows = []
    for method, steps in (("ddpm", args.ddpm_steps), ("ddim", args.ddim_steps)):
        times = []
        for _ in range(max(1, args.repeats)):  # same seed each time: identical output, only the clock differs
            t0 = time.perf_counter()
            syn = model.sample(
                args.patients, seed=args.seed, method=method, steps=steps, eta=args.eta if method == "ddim" else None
            )
            times.append(time.perf_counter() - t0)
        secs = min(times)
        m = evaluate(df, syn, schema).metrics
        auc, lag = m["discriminator_auc"], m.get("temporal.lag1_abs_diff.mean", float("nan"))
        rows.append((method, steps, secs, args.patients / secs, auc))
        print(
            f"sampling {method:4s} {steps:4d} steps: {args.patients} patients in {secs:.2f} s = {args.patients / secs:.1f} patients/s "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)} s); "
            f"discriminator AUC {auc:.3f}, mean |lag-1 diff| {lag:.3f}"
        )
    eta = model.config.sampling.eta if args.eta is None else args.eta
    print(f"DDIM-{args.ddim_steps} (eta {eta}) / DDPM-{args.ddpm_steps} speed-up: {rows[1][3] / rows[0][3]:.1f}x")


if __name__ == "__main__":
    main()
