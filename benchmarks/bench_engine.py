"""The engine's yardstick: every benchmark cohort, judged by the detector battery, one table.

    python benchmarks/bench_engine.py [--cohorts all|pbc,cgd,...] [--minutes 10] [--seeds 0[,1,...]]
        [--engine NAME=CONFIG.yaml | NAME=folders:DIR | NAME=][|KEY=VALUE;...] ... [--save DIR] [--out DIR]
    python benchmarks/bench_engine.py --tables RUN1/bench_engine.csv RUN2/bench_engine.csv [--out DIR]

Cohorts: the bundled PBC, every cohort of benchmarks/cohorts.py (public data) and the simulated
long and large cohorts of benchmarks/simulated.py. For each cohort and engine the extract is
split as the train flow splits it, the engine is trained on the training patients as the flow
trains it (at most --minutes of training), as many patients as the training set are sampled
once, and that one set is decoded two ways: plain (the network alone) and calibrated (the
pipeline's post-hoc decoding). Each is judged against the holdout as the pipeline judges it.

An engine is a config (`NAME=path.yaml`, or `NAME=` for the defaults) trained in this run, or
`NAME=folders:DIR`: model folders saved by an earlier run (`--save DIR` writes
DIR/<cohort>/), e.g. by another commit, so two engines are compared in one table. Config
overrides follow a `|` (`NAME=folders:DIR|sampling.method=dpmpp2m;sampling.steps=20`: the same
weights with another sampler; `NAME=|pipeline.seed=1000`: the same split, trained with other draws
(initial weights, batches, noise, validation patients), which measures what training noise alone
moves). Printed per
cohort, engine and decoding: the battery's real-vs-real floor, its AUC and each member's, the
mean stay-rate and lag-1 differences, MIA and DCR share with their 95% intervals, training
steps/s and minutes, sampling patients/s, and whether the pipeline would release it (or the
gates that blocked). With --out, the table as CSV and JSON and a figure (AUC above the floor
per cohort and engine) land there. `--tables` reads such CSVs back (e.g. one run per engine, or
one per commit) and prints, summarises and plots them together, training nothing.

With several `--seeds`, each seed draws its own holdout split and trains anew: on cohorts of a few
dozen patients one seed's AUC moves by 0.1 or more, so the summary also gives, for each engine
against the first, the paired difference of (AUC - floor) over every cohort and seed: its mean,
standard error and how many pairs it lowered or raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

COLUMNS = (
    ("floor", "floor", "{:.3f}"),
    ("auc", "AUC", "{:.3f}"),
    ("features", "feat", "{:.3f}"),
    ("sequence", "seq", "{:.3f}"),
    ("stay", "stay", "{:.3f}"),
    ("lag1", "lag1", "{:.3f}"),
    ("mia", "MIA", "{:.3f}"),
    ("mia_ci", "MIA 95%", "{}"),
    ("dcr", "DCR", "{:.3f}"),
    ("dcr_ci", "DCR 95%", "{}"),
    ("steps_s", "steps/s", "{:.1f}"),
    ("train_min", "min", "{:.1f}"),
    ("sample_s", "pat/s", "{:.0f}"),
    ("released", "released", "{}"),
)


def cohort_files(name: str, folder: Path) -> tuple[Path, Path]:
    if name == "pbc":
        return ROOT / "flows/data/pbcseq.csv", ROOT / "flows/data/pbc.yaml"
    import simulated

    if name in simulated.SIMULATED:
        return simulated.build(name, folder)
    from cohorts import build

    return build(name, folder)


def all_cohorts() -> list[str]:
    import simulated
    from cohorts import COHORTS

    return ["pbc", *COHORTS, *simulated.SIMULATED]


def _mean_of(metrics: dict[str, float], prefix: str) -> float:
    v = [x for k, x in metrics.items() if k.startswith(prefix) and k.rsplit(".", 1)[-1] not in ("max", "mean") and np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _row(result, timing: dict[str, float]) -> dict:
    m, c = result.metrics, result.calibration
    failed = [g.name for g in result.gates if not g.passed]

    def ci(k: str) -> str:
        lo, hi = m.get(f"{k}.ci_low"), m.get(f"{k}.ci_high")
        return f"{lo:.2f}-{hi:.2f}" if lo is not None and hi is not None else "-"

    return {
        "floor": c.get("discriminator_auc", float("nan")),
        "auc": m.get("discriminator_auc", float("nan")),
        "features": m.get("discriminator_auc.features", float("nan")),
        "sequence": m.get("discriminator_auc.sequence", float("nan")),
        "floor_features": c.get("discriminator_auc.features", float("nan")),
        "floor_sequence": c.get("discriminator_auc.sequence", float("nan")),
        "stay": _mean_of(m, "temporal.stay_prob_abs_diff."),
        "lag1": m.get("temporal.lag1_abs_diff.mean", float("nan")),
        "mia": m.get("privacy.mia_auc", float("nan")),
        "mia_ci": ci("privacy.mia_auc"),
        "dcr": m.get("privacy.dcr_share", float("nan")),
        "dcr_ci": ci("privacy.dcr_share"),
        **timing,
        "released": "yes" if result.passed else "no: " + ",".join(failed),
    }


def _engine_model(spec: str, cohort: str, train, schema, minutes: float, seed: int, save: Path | None):
    """(model, timing) for an engine spec: trained here from a config, or loaded from a folder."""
    from diffusion.bundle.fit import fit
    from diffusion.bundle.folder import HealthGymModel
    from diffusion.config import Config

    spec, _, extra = spec.partition("|")
    overrides = [o for o in extra.split(";") if o]
    if spec.startswith("folders:"):
        folder = Path(spec[len("folders:") :]) / cohort
        model = HealthGymModel.load(folder)
        model.config = model.config.with_overrides(overrides)  # e.g. another sampler for the same weights
        t = model.meta.training
        return model, {"steps_s": t.steps / max(t.seconds, 1e-9), "train_min": t.seconds / 60}
    cfg = Config.load(spec) if spec else Config()
    # the engine's own overrides come last: `pipeline.seed=N` there retrains on the same split with other draws
    cfg = cfg.with_overrides([f"train.max_minutes={minutes}", f"pipeline.seed={seed}", *overrides])
    model, result = fit(train, schema, cfg, progress=False, calibrate=False)
    if save is not None:
        model.save(save / cohort)
    return model, {"steps_s": result.steps / max(result.seconds, 1e-9), "train_min": result.seconds / 60}


def judge(model, train, holdout, seed: int) -> dict[str, dict]:
    """Plain and calibrated decoding of one sampled set, each judged against the holdout."""
    from diffusion.bundle.fit import calibrate_decoding
    from diffusion.encoding import Decoding
    from evaluation import evaluate

    n = int(train[model.schema.id].nunique())
    t0 = time.perf_counter()
    x = model.sample_tensor(n, seed=seed + 11)
    sample_s = n / (time.perf_counter() - t0)
    rows = {}
    model.encoder.decoding = Decoding()
    model.meta = dataclasses.replace(model.meta, calibration=None)
    for way in ("plain", "calibrated"):
        if way == "calibrated":
            calibrate_decoding(model)
        syn = model.protect(model.encoder.decode(x), seed=seed + 11)
        real, synthetic, held = model.judged(train, syn, holdout, seed=seed)
        result = evaluate(real, synthetic, model.schema, holdout=held, config=model.config.evaluation)
        rows[way] = _row(result, {"sample_s": sample_s})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohorts", default="all")
    ap.add_argument("--minutes", type=float, default=10.0, help="most minutes of training per cohort and engine")
    ap.add_argument("--seeds", "--seed", default="0", help="comma-separated seeds: each splits and trains anew")
    ap.add_argument("--engine", action="append", default=[], metavar="NAME=SPEC")
    ap.add_argument("--save", help="save each trained model folder under SAVE/<engine>/<cohort>")
    ap.add_argument("--out", help="write the table (CSV, JSON) and the figure here")
    ap.add_argument(
        "--tables", nargs="+", metavar="CSV", help="no training: print, summarise and plot earlier runs' tables together"
    )
    args = ap.parse_args()
    if args.tables:
        return merged(args.tables, Path(args.out) if args.out else None)

    from diffusion.config import Config
    from diffusion.data.schema import Schema
    from diffusion.data.split import split_patients
    from expectations.reading import read_extract

    engines = dict(e.split("=", 1) for e in (args.engine or ["today="]))
    names = all_cohorts() if args.cohorts == "all" else args.cohorts.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    table: list[dict] = []
    header = f"{'cohort':<12}{'engine':<10}{'decoding':<11}" + "".join(f" {label:>9}" for _, label, _ in COLUMNS)
    print(header, flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in names:
        data, schema_path = cohort_files(name, work)
        schema, df = Schema.load(schema_path), read_extract(data)
        pipe = Config().pipeline
        for seed in seeds:
            train, holdout = split_patients(df, schema.id, pipe.holdout_fraction, seed, pipe.min_holdout_patients)
            for engine, spec in engines.items():
                save = Path(args.save) / engine / (f"seed{seed}" if len(seeds) > 1 else "") if args.save else None
                try:
                    model, timing = _engine_model(spec, name, train, schema, args.minutes, seed, save)
                    rows = judge(model, train, holdout, seed)
                except Exception as exc:  # noqa: BLE001 - one cohort's failure is a row of the table, not the end
                    print(f"{name:<12}{engine:<10}failed: {type(exc).__name__}: {exc}", flush=True)
                    table.append({"cohort": name, "engine": engine, "seed": seed, "decoding": "-", "error": repr(exc)})
                    continue
                for way, row in rows.items():
                    row = {"cohort": name, "engine": engine, "seed": seed, "decoding": way, **row, **timing}
                    table.append(row)
                    print_row(row)
    summarise(table)
    if args.out:
        write(table, Path(args.out))


def print_row(row: dict) -> None:
    cells = "".join(f" {(fmt.format(row[k]) if k in row else '-'):>9}" for k, _, fmt in COLUMNS)
    cohort = row["cohort"] if _seed(row) == 0 else f"{row['cohort']}/{_seed(row)}"
    print(f"{cohort:<12}{row['engine']:<10}{row['decoding']:<11}{cells}", flush=True)


def summarise(table: list[dict]) -> None:
    """Per engine and decoding: median and worst AUC above the floor over the cohorts, the releases,
    and how many released sets hold MIA and DCR share point estimates <= 0.55."""
    print()
    keys = sorted({(r["engine"], r["decoding"]) for r in table if "auc" in r})
    for engine, way in keys:
        rows = [r for r in table if r.get("engine") == engine and r.get("decoding") == way and "auc" in r]
        gaps = [r["auc"] - r["floor"] for r in rows]
        released = [r for r in rows if r["released"] == "yes"]
        private = sum(r["mia"] <= 0.55 and r["dcr"] <= 0.55 for r in released)
        print(
            f"{engine} / {way}: AUC - floor median {np.nanmedian(gaps):.3f}, worst {np.nanmax(gaps):.3f} "
            f"over {len(gaps)} cohort runs; released {len(released)}/{len(gaps)}, of them MIA and DCR <= 0.55: {private}"
        )
    engines = list(dict.fromkeys(r["engine"] for r in table if "auc" in r))  # the first one given is the reference
    for way in sorted({w for _, w in keys}):
        for engine in engines[1:]:
            d = paired_gaps(table, engines[0], engine, way)
            if len(d):
                se = np.std(d, ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                print(
                    f"{engine} - {engines[0]} / {way}: AUC - floor {np.mean(d):+.3f} (standard error {se:.3f}) over "
                    f"{len(d)} paired cohort runs; lower in {int(np.sum(d < 0))}, higher in {int(np.sum(d > 0))}"
                )


def _seed(row: dict) -> int:
    """The row's seed; 0 for tables written before rows carried one."""
    seed = row.get("seed", 0)
    return 0 if seed is None or seed != seed else int(seed)  # seed != seed: NaN from a table without the column


def paired_gaps(table: list[dict], reference: str, engine: str, way: str) -> np.ndarray:
    """(AUC - floor) of `engine` minus that of `reference`, for every (cohort, seed) both have with decoding `way`."""

    def gaps(name: str) -> dict[tuple, float]:
        rows = (r for r in table if r.get("engine") == name and r.get("decoding") == way and "auc" in r)
        return {(r["cohort"], _seed(r)): r["auc"] - r["floor"] for r in rows}

    ref, new = gaps(reference), gaps(engine)
    return np.array([new[k] - ref[k] for k in sorted(ref.keys() & new.keys())], dtype=float)


def merged(paths: list[str], out: Path | None) -> None:
    """Earlier runs' tables (`--out`'s bench_engine.csv) printed cohort by cohort, summarised and plotted together."""
    import pandas as pd

    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True).dropna(subset=["auc"])
    table = frame.to_dict("records")
    print(f"{'cohort':<12}{'engine':<10}{'decoding':<11}" + "".join(f" {label:>9}" for _, label, _ in COLUMNS))
    for cohort in dict.fromkeys(frame["cohort"]):
        for row in (r for r in table if r["cohort"] == cohort):
            print_row(row)
    summarise(table)
    if out is not None:
        write(table, out)


def write(table: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(table)
    frame.to_csv(out / "bench_engine.csv", index=False)
    (out / "bench_engine.json").write_text(json.dumps(table, indent=1, default=float))
    ok = frame.dropna(subset=["auc"]) if "auc" in frame else frame.iloc[:0]
    if ok.empty:
        return
    ok = ok.assign(gap=ok["auc"] - ok["floor"], series=ok["engine"] + " / " + ok["decoding"])
    pivot = ok.pivot_table(index="cohort", columns="series", values="gap")
    ax = pivot.plot.bar(figsize=(max(6, 0.8 * len(pivot)), 4))
    ax.axhline(0.15, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("battery AUC - real-vs-real floor")
    ax.set_title("Detector battery against the holdout (lower is better)")
    ax.legend(title="engine / decoding", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    plt.tight_layout()
    plt.savefig(out / "bench_engine.png", dpi=120)
    print(f"Table and figure: {out}")


if __name__ == "__main__":
    main()
