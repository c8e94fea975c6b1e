"""Benchmark: evaluate the whole bundled PBC cohort against a synthetic set of the same size.

    .venv/bin/python benchmarks/bench_evaluation.py [--out DIR] [--repeat 1]

The synthetic stand-in is the real cohort with noise: fresh ids, every number jittered by 10%
of its column's spread (static columns once per patient), visit days shifted. Two timings are
printed, each with figures, report.html and metrics.json written:

- ``full``: all 312 real patients vs 312 synthetic ones, no holdout (the issue's figure);
- ``pipeline``: the pipeline's own case, an 80/20 train/holdout split, so utility, privacy
  and the calibration floor are computed too.

The issue's bar: <= 60 s on the 2-core CI machine. Imports (sdmetrics, matplotlib) are
counted in the first run's figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion.data.schema import Schema  # noqa: E402

DATA = ROOT / "flows" / "data" / "pbcseq.csv"
SCHEMA = ROOT / "flows" / "data" / "pbc.yaml"


def noisy_copy(df: pd.DataFrame, schema: Schema, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    codes = pd.factorize(out[schema.id])[0]
    n = codes.max() + 1
    for col in schema.columns:
        if not col.numeric:
            continue
        v = out[col.name].astype(float)
        spread = float(v.std()) or 1.0
        noise = rng.normal(0, 0.1 * spread, n)[codes] if col.static else rng.normal(0, 0.1 * spread, len(out))
        v = v + noise
        if col.min is not None:
            v = v.clip(lower=col.min)
        if col.max is not None:
            v = v.clip(upper=col.max)
        out[col.name] = v.round() if col.type == "integer" else v
    shift = rng.integers(-10, 11, len(out))
    first = out.groupby(schema.id).cumcount() == 0
    out[schema.time] = np.where(first, out[schema.time], out[schema.time] + shift)
    out[schema.id] = codes + 10_000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for the reports (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    t0 = time.perf_counter()
    from evaluation import evaluate

    print(f"import evaluation: {time.perf_counter() - t0:.1f} s")
    schema = Schema.load(SCHEMA)
    real = pd.read_csv(DATA)
    syn = noisy_copy(real, schema)
    ids = np.random.default_rng(0).permutation(np.sort(real[schema.id].unique()))
    cut = int(round(len(ids) * 0.8))
    train, holdout = real[real[schema.id].isin(ids[:cut])], real[real[schema.id].isin(ids[cut:])]
    history = [{"step": s, "loss": 1.0 / (1 + s / 100), "val_loss": 1.1 / (1 + s / 100)} for s in range(0, 5000, 250)]
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-eval-"))
    print(
        f"PBC: {real[schema.id].nunique()} patients, {len(real)} visits; synthetic stand-in: "
        f"{syn[schema.id].nunique()} patients, {len(syn)} visits"
    )
    for i in range(args.repeat):
        for name, kwargs in (("full", {"real": real}), ("pipeline", {"real": train, "holdout": holdout})):
            out = base / f"{name}-{i}"
            t = time.perf_counter()
            res = evaluate(kwargs["real"], syn, schema, holdout=kwargs.get("holdout"), loss_history=history, out_dir=out)
            took = time.perf_counter() - t
            print(
                f"{name:9s} run {i + 1}: {took:6.1f} s  ({len(res.metrics)} measures, {len(res.calibration)} calibration, "
                f"{len(res.figures)} figures, discriminator_auc={res.metrics['discriminator_auc']:.3f}, "
                f"gates {'passed' if res.passed else 'failed'}) -> {res.report_path}"
            )


if __name__ == "__main__":
    main()
