"""Does the pipeline release, and honestly? Pass rate of the default gates over training and sampling seeds.

    python benchmarks/bench_releasable.py [--data CSV --schema YAML | --cohort NAME] [--config YAML]
        [--train-seeds 0,1,2] [--sample-seeds 0,1,2] [--set section.key=value ...]

Default: the demo (bundled PBC cohort, flows/data/demo.yaml). `--cohort NAME` builds one of
benchmarks/cohorts.py's public cohorts. For every training seed (pipeline.seed: the holdout
split, the weights, the noise) the cohort is split, protected and trained exactly as
`healthgym train` does; for every sampling seed a synthetic set as large as the cohort is drawn
and judged by the release gates against the holdout. Every draw is printed (no draw is retried
or dropped), then the pass rate, the gates that failed and the privacy measures with their 95%
intervals.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cohort(args) -> tuple[Path, Path]:
    if args.cohort:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from cohorts import build

        return build(args.cohort, Path(tempfile.mkdtemp(prefix="cohort-")))
    if args.data:
        return Path(args.data), Path(args.schema)
    return ROOT / "flows/data/pbcseq.csv", ROOT / "flows/data/pbc.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--schema")
    ap.add_argument("--cohort")
    ap.add_argument("--config", default=str(ROOT / "flows/data/demo.yaml"))
    ap.add_argument("--train-seeds", default="0,1,2")
    ap.add_argument("--sample-seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from diffusion.bundle.fit import fit
    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from evaluation import evaluate
    from expectations.reading import read_extract

    data, schema_path = _cohort(args)
    schema = Schema.load(schema_path)
    df = read_extract(data)
    base = Config.load(args.config).with_overrides(args.set)
    draws, failures = [], Counter()
    print(f"{schema.name}: {df[schema.id].nunique()} patients; config {Path(args.config).name} {' '.join(args.set)}")
    print(
        "train seed, sample seed: passed | failed gates | discriminator AUC (floor) | DCR share [95%] | MIA AUC [95%] | "
        "near copies [95%] | exact copies"
    )
    for ts in (int(s) for s in args.train_seeds.split(",")):
        cfg = base.with_overrides([f"pipeline.seed={ts}"])
        train, holdout = split_patients(df, schema.id, cfg.pipeline.holdout_fraction, ts, cfg.pipeline.min_holdout_patients)
        t0 = time.perf_counter()
        model, result = fit(train, schema, cfg, progress=False)
        print(
            f"  training seed {ts}: {result.steps} of {result.planned_steps} planned steps in {time.perf_counter() - t0:.0f} s, "
            f"stopped by {result.stopped_by}, kept step {result.best_step}, memorisation signal {result.best_dcr_share}"
        )
        real, held = model.protect(train, seed=ts), model.protect(holdout, seed=ts + 1)  # as the pipeline judges
        for ss in (int(s) for s in args.sample_seeds.split(",")):
            syn = model.sample(df[schema.id].nunique(), seed=ss)
            r = evaluate(real, syn, model.schema, holdout=held, config=cfg.evaluation)
            m, cal = r.metrics, r.calibration
            failed = [g.name for g in r.gates if not g.passed]
            failures.update(failed)
            draws.append(r.passed)

            def ci(k: str) -> str:
                return f"{m.get(k, float('nan')):.3f} [{m.get(k + '.ci_low', float('nan')):.3f}, {m.get(k + '.ci_high', float('nan')):.3f}]"

            print(
                f"  {ts}, {ss}: {'PASS' if r.passed else 'FAIL'} | {', '.join(failed) or '-'} | "
                f"{m.get('discriminator_auc', float('nan')):.3f} ({cal.get('discriminator_auc', float('nan')):.3f}) | "
                f"{ci('privacy.dcr_share')} | {ci('privacy.mia_auc')} | {ci('privacy.near_copy_share')} | "
                f"{m.get('privacy.exact_copies', float('nan')):.0f}",
                flush=True,
            )
    print(f"pass rate: {sum(draws)}/{len(draws)} = {sum(draws) / max(len(draws), 1):.0%}")
    if failures:
        print("failed gates: " + ", ".join(f"{k} x{v}" for k, v in failures.most_common()))


if __name__ == "__main__":
    main()
