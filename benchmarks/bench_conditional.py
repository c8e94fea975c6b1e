"""How a subgroup sampled with `--where` compares with the real subgroup, beside the real-vs-real floor.

    python benchmarks/bench_conditional.py [--cohort pbc] [--where "sex == 'm'" --where ...]
        [--seed 0] [--set section.key=value ...]

The extract is split and one model trained as `healthgym train` does (default config). For each
condition, as many synthetic patients as the real training subgroup are drawn with
`diffusion.bundle.conditional.sample_where` and judged against the real holdout patients of the
subgroup, exactly as a conditional release is (`healthgym release --where`); the floor puts the
real training subgroup in their place. Printed per condition: real subgroup sizes, the
discriminator AUC, the quality score, the mean lag-1 difference and the largest missing-rate
difference, each with its floor, and the share of the condition's patients in an unconditional
sample (what rejection alone would have to draw through) and the seconds it took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MEASURES = (
    ("discriminator_auc", "AUC"),
    ("fidelity.quality_score", "quality"),
    ("temporal.lag1_abs_diff.mean", "lag1"),
    ("missing.rate_abs_diff.max", "missing"),
)
DEFAULT_WHERE = {"pbc": ["sex == 'm'", "status == 2", "trt == 1 and age > 55"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", default="pbc")
    ap.add_argument("--where", action="append", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from bench_decoding import _cohort

    from diffusion.bundle.conditional import sample_where, select
    from diffusion.bundle.fit import fit
    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from evaluation import evaluate
    from expectations.reading import read_extract

    data, schema_path = _cohort(args.cohort)
    schema, df = Schema.load(schema_path), read_extract(data)
    cfg = Config().with_overrides([f"pipeline.seed={args.seed}", *args.set])
    train, holdout = split_patients(df, schema.id, cfg.pipeline.holdout_fraction, args.seed, cfg.pipeline.min_holdout_patients)
    t0 = time.perf_counter()
    model, result = fit(train, schema, cfg, progress=False)
    print(f"{args.cohort}: {result.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    plain = model.sample(train[schema.id].nunique(), seed=args.seed + 5)
    print(f"{'condition':<28}{'real train/holdout':>20}{'share':>8}{'seconds':>9}" + "".join(f"{h:>16}" for _, h in MEASURES))
    for where in args.where or DEFAULT_WHERE.get(args.cohort, []):
        real, held = select(train, model, where), select(holdout, model, where)
        share = select(plain, model, where)[schema.id].nunique() / plain[schema.id].nunique()
        t1 = time.perf_counter()
        syn = sample_where(model, max(real[schema.id].nunique(), 2), where, seed=args.seed)
        seconds = time.perf_counter() - t1
        r_real, r_syn, r_held = model.judged(real, syn, held, seed=0)
        r = evaluate(r_real, r_syn, model.schema, holdout=r_held, config=cfg.evaluation)
        cells = "".join(f"{r.metrics.get(k, float('nan')):>8.3f}/{r.calibration.get(k, float('nan')):<7.3f}" for k, _ in MEASURES)
        sizes = f"{real[schema.id].nunique()}/{held[schema.id].nunique()}"
        print(f"{where:<28}{sizes:>20}{share:>8.3f}{seconds:>9.1f}{cells}", flush=True)
    print("(each measure: synthetic subgroup vs real holdout subgroup / real-vs-real floor)")


if __name__ == "__main__":
    main()
