"""Data-parallel training against one process: wall time, steps per second, final losses.

    python benchmarks/bench_ddp.py [--processes 1,2] [--steps 300] [--set section.key=value ...]

Trains on the bundled PBC extract with the default config (memorisation checks and calibration
off, so only the training loop is timed) once per process count: 1 runs `diffusion.bundle.fit.fit` in
this process, N > 1 runs `tasks.torchrun.launch` (torchrun, gloo on CPU, NCCL on CUDA).
Prints wall time (process start-up included), the training loop's steps per second and the last
validation loss. The global batch is the same at every N, so the losses are comparable; the
speed-up needs as many free cores or GPUs as processes. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from diffusion.bundle.fit import fit
from diffusion.config import Config
from diffusion.data.schema import Schema
from diffusion.data.split import split_patients
from tasks.torchrun import launch

ROOT = Path(__file__).resolve().parents[1]
DATA, SCHEMA = ROOT / "flows/data/pbcseq.csv", ROOT / "flows/data/pbc.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", default="1,2")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    base = [f"train.max_steps={args.steps}", "train.eval_every=100", "train.memorisation_patients=0", "encoding.calibrate=false"]
    df, schema = pd.read_csv(DATA), Schema.load(SCHEMA)
    print(f"{'processes':>9}  {'wall s':>7}  {'steps/s':>7}  {'last val loss':>13}")
    for n in (int(x) for x in args.processes.split(",")):
        cfg = Config().with_overrides([*base, *args.set, f"train.processes={n}"])
        start = time.monotonic()
        if n == 1:
            pipe = cfg.pipeline
            train, _ = split_patients(df, schema.id, pipe.holdout_fraction, pipe.seed, pipe.min_holdout_patients)
            _, result = fit(train, schema, cfg, real_ids=df[schema.id], progress=False)
        else:
            _, result = launch(DATA, SCHEMA, cfg)
        wall = time.monotonic() - start
        print(f"{n:>9}  {wall:7.1f}  {result.steps / result.seconds:7.1f}  {result.history[-1]['val_loss']:13.4f}")


if __name__ == "__main__":
    main()
