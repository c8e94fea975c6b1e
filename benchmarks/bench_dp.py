"""What differential privacy costs in fidelity, on the bundled PBC cohort.

    python benchmarks/bench_dp.py [--minutes 4] [--epsilons 1,3,10,none] [--set section.key=value ...]

For each epsilon ("none": DP off) runs the whole train flow, as `healthgym train` runs it,
in a fresh temporary folder with its own MLflow store (train.dp=true, train.dp_epsilon=E,
train.max_minutes=--minutes, plus any --set overrides), then reads the run's figures back from
MLflow and prints one table: the epsilon actually spent, the training steps, the patient-level
real-vs-synthetic classifier AUC, the mean |lag-1 autocorrelation difference|, the sdmetrics
quality score, the DCR share and the membership-inference AUC. Each setting takes about
--minutes of training plus sampling, calibration and evaluation.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "flows/data/pbcseq.csv"
SCHEMA = ROOT / "flows/data/pbc.yaml"

COLUMNS = [  # (header, MLflow metric)
    ("eps spent", "train.dp_epsilon_spent"),
    ("steps", "train.steps"),
    ("disc. AUC", "discriminator_auc"),
    ("lag-1 diff", "temporal.lag1_abs_diff.mean"),
    ("quality", "fidelity.quality_score"),
    ("DCR share", "privacy.dcr_share"),
    ("MIA AUC", "privacy.mia_auc"),
]


def parse_epsilons(text: str) -> list[float | None]:
    """ "1,3,10,none" -> [1.0, 3.0, 10.0, None] (None: DP off)."""
    out: list[float | None] = []
    for item in (s.strip().lower() for s in text.split(",") if s.strip()):
        out.append(None if item in ("none", "off") else float(item))
    if not out:
        raise argparse.ArgumentTypeError("--epsilons needs at least one value")
    return out


def run_setting(epsilon: float | None, minutes: float, overrides: list[str]) -> dict[str, float]:
    """Train, sample and evaluate through the CLI in a fresh folder; the train run's metrics."""
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        dp = [] if epsilon is None else ["train.dp=true", f"train.dp_epsilon={epsilon}"]  # DP is off by default
        cmd = [sys.executable, "-m", "flows.cli", "train", str(DATA), "--schema", str(SCHEMA), "--max-minutes", str(minutes)]
        for assignment in [*dp, *overrides]:
            cmd += ["--set", assignment]
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[1:])}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return read_train_metrics(uri)


def read_train_metrics(uri: str) -> dict[str, float]:
    """The latest train run's COLUMNS metrics in the MLflow store at `uri` (NaN where not logged)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`healthgym.kind` = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs.empty:
        raise RuntimeError(f"no train run in {uri}")
    row = runs.iloc[0]
    return {key: float(row.get(f"metrics.{key}", math.nan)) for _, key in COLUMNS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget per setting (default 4)")
    ap.add_argument(
        "--epsilons",
        type=parse_epsilons,
        default=parse_epsilons("1,3,10,none"),
        help='comma-separated target epsilons, "none" for DP off (default "1,3,10,none")',
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override for every setting")
    args = ap.parse_args()

    results: list[tuple[str, dict[str, float]]] = []
    for epsilon in args.epsilons:
        label = "no DP" if epsilon is None else f"eps {epsilon:g}"
        t0 = time.perf_counter()
        print(f"{label}: training for {args.minutes:g} min, then sampling and evaluation ...", file=sys.stderr, flush=True)
        results.append((label, run_setting(epsilon, args.minutes, args.set)))
        print(f"{label}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    print(f"{'setting':<10s}" + "".join(f"{header:>12s}" for header, _ in COLUMNS))
    for label, metrics in results:
        cells = "".join(f"{metrics[key]:>12.0f}" if key == "train.steps" else f"{metrics[key]:>12.3f}" for _, key in COLUMNS)
        print(f"{label:<10s}{cells}")


if __name__ == "__main__":
    main()
