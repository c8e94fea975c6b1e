"""What each post-hoc decoding step buys, on patients the model never saw, across cohorts.

    python benchmarks/bench_decoding.py [--cohorts pbc,respiratory,quinidine,milk,phenobarb]
        [--seed 0] [--sample-seeds 0,1] [--set section.key=value ...]

For each cohort (`pbc`: the bundled one; others from benchmarks/cohorts.py) the extract is split
and one model trained exactly as `healthgym train` does, without calibration. One calibration
sample is generated, and the same synthetic sets (one per sampling seed, as many patients as the
training set) are decoded several ways: plain (no calibration), every step, and every step but
one, for each step of `diffusion.encoding.calibration.STEPS`. Each decoded set passes through the
model's value protection and is judged against the holdout as the pipeline judges it. Printed
per cohort and way (mean over the sampling seeds): the discriminator AUC (an independent
measure: no step aims at it), the lag-1 and rank lag-1 differences, the stay-rate difference,
the largest missing-rate difference, the quality score and the DCR share; the real-vs-real floor
is the first line. A step pays when removing it makes the holdout measures worse.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

COLUMNS = (
    ("discriminator_auc", "AUC"),
    ("temporal.lag1_abs_diff.mean", "lag1"),
    ("rank_lag1_mean", "rank lag1"),
    ("stay_mean", "stay"),
    ("missing.rate_abs_diff.max", "missing"),
    ("fidelity.quality_score", "quality"),
    ("privacy.dcr_share", "DCR"),
)


def _cohort(name: str) -> tuple[Path, Path]:
    if name == "pbc":
        return ROOT / "flows/data/pbcseq.csv", ROOT / "flows/data/pbc.yaml"
    from cohorts import build

    return build(name, Path(tempfile.mkdtemp(prefix="cohort-")))


def _with_means(m: dict[str, float]) -> dict[str, float]:
    """The metrics plus the mean rank lag-1 and stay-rate differences over columns."""
    out = dict(m)
    for key, prefix in (("rank_lag1_mean", "temporal.lag1_rank_abs_diff."), ("stay_mean", "temporal.stay_prob_abs_diff.")):
        v = [x for k, x in m.items() if k.startswith(prefix) and k != prefix + "max" and np.isfinite(x)]
        out[key] = float(np.mean(v)) if v else float("nan")
    return out


def _row(label: str, values: list[dict[str, float]]) -> str:
    cells = []
    for key, _ in COLUMNS:
        v = [m[key] for m in values if key in m and np.isfinite(m[key])]
        cells.append(f"{np.mean(v):9.3f}" if v else f"{'-':>9}")
    return f"  {label:<20}" + "".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohorts", default="pbc,respiratory,quinidine,milk,phenobarb")
    ap.add_argument("--seed", type=int, default=0, help="pipeline.seed: split, weights, calibration sample")
    ap.add_argument("--sample-seeds", default="0,1")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from diffusion.bundle.fit import fit
    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from diffusion.encoding import Decoding
    from diffusion.encoding.calibration import STEPS
    from evaluation import evaluate
    from expectations.reading import read_extract

    ways = {"plain": (), "all steps": STEPS, **{f"all but {s}": tuple(t for t in STEPS if t != s) for s in STEPS}}
    for name in args.cohorts.split(","):
        data, schema_path = _cohort(name)
        schema, df = Schema.load(schema_path), read_extract(data)
        cfg = Config().with_overrides([f"pipeline.seed={args.seed}", "encoding.calibrate=false", *args.set])
        train, holdout = split_patients(
            df, schema.id, cfg.pipeline.holdout_fraction, args.seed, cfg.pipeline.min_holdout_patients
        )
        t0 = time.perf_counter()
        model, result = fit(train, schema, cfg, progress=False)
        n = train[schema.id].nunique()
        print(
            f"\n{name}: {df[schema.id].nunique()} patients ({n} training, {holdout[schema.id].nunique()} holdout); "
            f"{result.steps} steps in {time.perf_counter() - t0:.0f} s, width {model.config.model.base_channels}",
            flush=True,
        )
        real, held = model.protect(train, seed=args.seed), model.protect(holdout, seed=args.seed + 1)
        x_cal = model.sample_tensor(min(cfg.encoding.calibration_patients, 8 * n), seed=args.seed + 1)
        sets = {s: model.sample_tensor(n, seed=s) for s in (int(v) for v in args.sample_seeds.split(","))}
        print(f"  {'decoding':<20}" + "".join(f"{label:>9}" for _, label in COLUMNS))
        floor = None
        for way, steps in ways.items():
            if steps:
                model.encoder.calibrate(x_cal, steps)
            else:
                model.encoder.decoding = Decoding()  # plain: signs, argmax, identity maps
            values = []
            for s, x in sets.items():
                syn = model.protect(model.encoder.decode(x), seed=s)
                r = evaluate(real, syn, model.schema, holdout=held, config=cfg.evaluation)
                values.append(_with_means(r.metrics))
                floor = floor or _with_means(r.calibration)
            if way == "plain":
                print(_row("real-vs-real", [floor]))
            print(_row(way, values), flush=True)


if __name__ == "__main__":
    main()
