"""Quality of the engine on the bundled PBC cohort, as the pipeline measures it.

    python benchmarks/bench_quality.py [--minutes 8] [--set section.key=value ...] [--save DIR]

Splits the cohort as the train flow does (20% holdout, at least 40 patients), trains the
default model (plus any --set overrides) on the training patients for --minutes on this
machine, samples as many patients as the whole cohort has (312), and prints the figures the engine is judged on: missing rate per nullable column (real vs synthetic), sequence
length TVD, lag-1 autocorrelation per temporal number (real vs synthetic), the patient-level
real-vs-synthetic classifier AUC, quality score and the privacy measures, all against the
holdout. The real-vs-real line (training patients vs the holdout) shows what an ideal generator
would score.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=1, help="sampling seed")
    ap.add_argument("--save", help="also save the model folder here")
    args = ap.parse_args()

    from diffusion.bundle.fit import fit
    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from evaluation import evaluate

    schema = Schema.load(ROOT / "flows/data/pbc.yaml")
    df = pd.read_csv(ROOT / "flows/data/pbcseq.csv")
    cfg = Config().with_overrides([f"train.max_minutes={args.minutes}", *args.set])
    train, holdout = split_patients(
        df, schema.id, cfg.pipeline.holdout_fraction, cfg.pipeline.seed, cfg.pipeline.min_holdout_patients
    )
    model, result = fit(train, schema, cfg, progress=False)
    print(
        f"training: {result.steps} steps in {result.seconds:.0f} s ({result.steps / result.seconds:.1f} steps/s), "
        f"best validation loss at step {result.best_step}"
    )
    if args.save:
        model.save(args.save)
    n = df[schema.id].nunique()
    t0 = time.perf_counter()
    syn = model.sample(n, seed=args.seed)
    print(
        f"sampling: {n} patients in {time.perf_counter() - t0:.1f} s "
        f"({model.config.sampling.method}, {model.config.sampling.steps} steps, eta {model.config.sampling.eta})"
    )
    # the real frames as the pipeline evaluates them
    r = evaluate(
        model.protect(train, seed=cfg.pipeline.seed),
        syn,
        model.schema,
        holdout=model.protect(holdout, seed=cfg.pipeline.seed + 1),
    )
    m, cal = r.metrics, r.calibration

    def line(label: str, key: str) -> None:
        ref = cal.get(key, float("nan"))
        print(f"  {label:<34s} {m.get(key, float('nan')):7.3f}   (real vs real {ref:.3f})")

    print("missing rate, real -> synthetic:")
    for col in schema.columns:
        if col.nullable:
            print(f"  {col.name:<12s} {m[f'missing.rate.real.{col.name}']:.3f} -> {m[f'missing.rate.synthetic.{col.name}']:.3f}")
    print("lag-1 autocorrelation, real -> synthetic:")
    for col in schema.columns:
        key = f"temporal.lag1.real.{col.name}"
        if key in m:
            diff = f"temporal.lag1_abs_diff.{col.name}"
            print(
                f"  {col.name:<12s} {m[key]:.3f} -> {m[f'temporal.lag1.synthetic.{col.name}']:.3f} "
                f"(|diff| {m[diff]:.3f}; real vs real {cal.get(diff, float('nan')):.3f})"
            )
    print("consecutive visits with the same category, real -> synthetic:")
    for col in schema.columns:
        key = f"temporal.stay_prob.real.{col.name}"
        if key in m:
            print(f"  {col.name:<12s} {m[key]:.3f} -> {m[f'temporal.stay_prob.synthetic.{col.name}']:.3f}")
    for label, key in [
        ("sequence-length TVD", "temporal.length_tvd"),
        ("largest missing-rate difference", "missing.rate_abs_diff.max"),
        ("mean |lag-1 difference|", "temporal.lag1_abs_diff.mean"),
        ("largest |lag-1 difference|", "temporal.lag1_abs_diff.max"),
        ("discriminator AUC", "discriminator_auc"),
        ("sdmetrics quality score", "fidelity.quality_score"),
        ("DCR share", "privacy.dcr_share"),
        ("MIA AUC", "privacy.mia_auc"),
        ("exact copies", "privacy.exact_copies"),
    ]:
        line(label, key)


if __name__ == "__main__":
    main()
