"""The pipeline at a registry's scale: wall time and peak memory of each step, per extract size.

    python benchmarks/bench_scale.py [--cases 10000x20,100000x20,2000x500] [--columns 30]
        [--sample 5000] [--set section.key=value ...]

Each case (PATIENTSxVISITS) runs in a process of its own, so its peak resident memory (RSS) is
its own. A synthetic extract is generated (`--columns` features: static and temporal numbers
with patient levels and AR(1) deviations, nullable labs, counts, flags and categories; visits at
irregular gaps), written as Parquet, then timed step by step as the pipeline runs it:

- read + validate: `read_extract` and the Great Expectations suite of the schema;
- encode: value protection fitted and applied, the encoder fitted, every patient encoded;
- one training epoch: one pass over the training patients (default config, probe off);
- sampling: `--sample` patients (or all, if fewer), reported as patients per second;
- evaluation: the pipeline's evaluation of a split of real patients standing in for synthetic
  ones (its cost depends on the sizes, not on where the patients came from).

Printed per step: seconds, peak RSS so far (GB), and the target where the issue sets one
(10^5 patients: validation <= 60 s, sampling >= 500 patients/s, evaluation <= 5 min, RSS <= 8 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_extract(patients: int, visits: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A long extract of `patients` x up to `visits` visits with `columns` feature columns, and its schema."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(2, visits // 2), visits + 1, size=patients)
    pid = np.repeat(np.arange(patients), lengths)
    pos = np.concatenate([np.arange(k) for k in lengths])
    first = pos == 0
    gaps = np.where(first, 0, rng.gamma(2.0, 15.0, size=len(pid)).round() + 1)
    day = pd.Series(gaps).groupby(pid).cumsum().to_numpy()
    out = {"pid": pid + 1000, "day": day}
    schema: dict = {"name": "scale", "id": "pid", "time": "day", "max_length": visits, "columns": {}}
    kinds = ["static_real", "static_cat", "static_flag"] + ["lab", "lab_null", "count", "flag", "cat"] * columns
    for i, kind in enumerate(kinds[:columns]):
        name = f"{kind}{i}"
        level = rng.normal(size=patients)[pid]
        if kind == "static_real":
            out[name] = (50 + 12 * level).round(1)
            schema["columns"][name] = {"type": "real", "static": True, "min": 0}
        elif kind == "static_cat":
            out[name] = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, size=patients)][pid]
            schema["columns"][name] = {"type": "categorical", "static": True, "categories": ["a", "b", "c", "d"]}
        elif kind == "static_flag":
            out[name] = (rng.random(patients) < 0.3)[pid].astype(int)
            schema["columns"][name] = {"type": "binary", "static": True}
        else:
            dense = np.zeros((patients, visits))
            noise = rng.normal(size=(patients, visits))
            for k in range(1, visits):  # AR(1) deviations, visit by visit, every patient at once
                dense[:, k] = 0.7 * dense[:, k - 1] + 0.71 * noise[:, k]
            z = level + 0.5 * dense[pid, pos]
            if kind in ("lab", "lab_null"):
                v = np.exp(1.5 + 0.4 * z).round(2)
                if kind == "lab_null":
                    v = np.where(rng.random(len(pid)) < 0.2, np.nan, v)
                out[name] = v
                schema["columns"][name] = {"type": "real", "min": 0, "nullable": kind == "lab_null"}
            elif kind == "count":
                out[name] = np.maximum(0, (20 + 6 * z).round()).astype(int)
                schema["columns"][name] = {"type": "integer", "min": 0}
            elif kind == "flag":
                out[name] = (z + 0.3 * rng.normal(size=len(pid)) > 0.8).astype(int)
                schema["columns"][name] = {"type": "binary"}
            else:
                out[name] = np.array(["x", "y", "z"])[np.clip(np.digitize(z, [-0.5, 0.5]), 0, 2)]
                schema["columns"][name] = {"type": "categorical", "categories": ["x", "y", "z"]}
    return pd.DataFrame(out), schema


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def run_case(patients: int, visits: int, columns: int, sample: int, overrides: list[str]) -> list[dict]:
    """Every step of one case in this process: [{"step", "seconds", "peak_gb", "note"}]."""
    from diffusion.bundle.fit import fit
    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from diffusion.encoding import TrajectoryEncoder
    from diffusion.privacy.protection import Protection
    from evaluation import evaluate
    from expectations import read_extract, validate_extract

    rows: list[dict] = []

    def mark(step: str, started: float, note: str = "") -> None:
        rows.append(
            {"step": step, "seconds": round(time.perf_counter() - started, 1), "peak_gb": round(peak_gb(), 2), "note": note}
        )
        print(f"  ... {step}: {rows[-1]['seconds']} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        t = time.perf_counter()
        df, raw = make_extract(patients, visits, columns)
        path = Path(tmp) / "extract.parquet"
        df.to_parquet(path, index=False)
        del df
        mark("generate", t, f"{patients} patients, {visits} visits at most, {columns} columns")

        schema = Schema.from_dict(raw)
        t = time.perf_counter()
        df = read_extract(path)
        report = validate_extract(df, schema)
        mark("read + validate", t, f"{len(df)} rows, {'passed' if report.success else 'FAILED'}")

        cfg = Config().with_overrides(["train.memorisation_patients=0", *overrides])
        train, holdout = split_patients(df, schema.id, cfg.pipeline.holdout_fraction, 0, cfg.pipeline.min_holdout_patients)
        t = time.perf_counter()
        protection = Protection.fit(train, schema, cfg.privacy.k, cfg.privacy.rare)
        protected = protection.apply(train, protection.schema(schema), seed=0)
        encoder = TrajectoryEncoder(protection.schema(schema), k=cfg.privacy.k).fit(protected)
        encoded = encoder.encode(protected)
        mark("encode", t, f"{encoded.x.shape} float32 = {encoded.x.nbytes / 1e9:.2f} GB")
        del protected, encoded

        n_train = train[schema.id].nunique()
        # one pass, also for long patients, whose plan otherwise counts a pass per 20 visits
        batches = -(-n_train // min(cfg.train.batch_size, n_train))
        one_epoch = cfg.with_overrides(
            {"train.max_epochs": 1.0, "train.min_steps": 0, "train.max_steps": batches, "encoding.calibrate": False}
        )
        t = time.perf_counter()
        model, result = fit(train, schema, one_epoch, progress=False)
        mark("one training epoch", t, f"{result.steps} steps, width {model.config.model.base_channels} (encoding included)")

        k = min(sample, n_train)
        t = time.perf_counter()
        syn = model.sample(k, seed=1)
        seconds = time.perf_counter() - t
        mark("sampling", t, f"{k} patients: {k / seconds:.0f} patients/s, {len(syn)} rows")

        stand_in, real = split_patients(train, schema.id, 0.5, 1)  # real patients standing in for synthetic ones
        t = time.perf_counter()
        res = evaluate(real, stand_in, schema, holdout=holdout, config=cfg.evaluation)
        mark(
            "evaluation",
            t,
            f"{real[schema.id].nunique()} real / {stand_in[schema.id].nunique()} stand-in / "
            f"{holdout[schema.id].nunique()} holdout patients, {len(res.metrics)} metrics",
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="10000x20,100000x20,2000x500")
    ap.add_argument("--columns", type=int, default=30)
    ap.add_argument("--sample", type=int, default=5000)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a case run in its own process
    args = ap.parse_args()
    if args.one:
        p, v = (int(x) for x in args.one.split("x"))
        print(json.dumps(run_case(p, v, args.columns, args.sample, args.set)))
        return
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--one", case, "--columns", str(args.columns), "--sample", str(args.sample)]
        cmd += sum((["--set", s] for s in args.set), [])
        print(f"\n== {case} (patients x visits), {args.columns} columns", flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # its progress lines go to stderr as they come
        if proc.returncode != 0:
            continue
        for row in json.loads(proc.stdout.strip().splitlines()[-1]):
            print(f"  {row['step']:<20}{row['seconds']:>9.1f} s{row['peak_gb']:>8.2f} GB peak   {row['note']}", flush=True)


if __name__ == "__main__":
    main()
