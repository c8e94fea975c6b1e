"""The production profile's costs, beside the embedded defaults: wall time of each step.

    python benchmarks/bench_stack.py [--repeats 3] [--set section.key=value ...]

Brings up a stack of its own (`scripts/stack.sh up` on free ports, databases `hgbench_*`;
`destroy` at the end), then times, with the same model config: `healthgym train` and `healthgym
release` on the stack and on the embedded defaults (Prefect's temporary server, MLflow on
SQLite, in a fresh folder), `prefect deploy --all` from prefect.yaml, and the nightly-release
deployment run by the worker (`prefect deployment run ... --watch`, scheduling and the worker's
start included). Each release is timed `--repeats` times; prints the median and range. The
default config is the plumbing one the tests use (a small network, few steps, gates relaxed:
the figures are the pipeline's overhead, not a model's quality). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_pipeline import FAST  # noqa: E402  (the plumbing config of the tests)

DATA, SCHEMA = ROOT / "flows/data/pbcseq.csv", ROOT / "flows/data/pbc.yaml"
BIN = ROOT / ".venv/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return time.monotonic() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} s  [{min(values):.1f}, {max(values):.1f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], help="config override on top of the plumbing config")
    args = p.parse_args()
    config = [*FAST, *sum((["--set", s] for s in args.set), [])]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "HEALTHGYM_"))}
    base["PYTHONPATH"] = str(ROOT)
    hg = [str(BIN / "python"), "-m", "flows.cli"]
    work = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    prefix = f"hgbench_{uuid.uuid4().hex[:6]}"
    home = work / "home"
    home.mkdir()
    for package in ("flows", "tasks", "diffusion", "evaluation", "expectations"):
        (home / package).symlink_to(ROOT / package)
    stack = {
        **base,
        "HEALTHGYM_STACK_DIR": str(work / "stack"),
        "HEALTHGYM_DB_PREFIX": prefix,
        "PREFECT_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "HEALTHGYM_HOME": str(home),
        "HEALTHGYM_RELEASES": str(work / "releases"),
    }
    rows: dict[str, str] = {}
    try:
        start = time.monotonic()
        up = subprocess.run(["bash", str(ROOT / "scripts/stack.sh"), "up"], env=stack, capture_output=True, text=True)
        if up.returncode != 0:
            raise SystemExit(up.stdout + up.stderr)
        rows["stack.sh up (databases, two servers, pool, worker)"] = f"{time.monotonic() - start:6.1f} s"
        exports = dict(line[len("export ") :].split("=", 1) for line in up.stdout.splitlines() if line.startswith("export "))
        served = {**stack, **exports}
        embedded = work / "embedded"
        embedded.mkdir()
        on_stack = work / "on-stack"
        on_stack.mkdir()
        train = [*hg, "train", str(DATA), "--schema", str(SCHEMA), *config]
        rows["healthgym train, embedded"] = f"{timed(train, cwd=embedded, env=base):6.1f} s"
        rows["healthgym train, on the stack"] = f"{timed(train, cwd=on_stack, env=served):6.1f} s"
        release = [*hg, "release", "--name", "pbc", "--patients", "100"]
        for label, cwd, env in (("embedded", embedded, base), ("on the stack", on_stack, served)):
            times = [timed([*release, "--seed", str(i)], cwd=cwd, env=env) for i in range(args.repeats)]
            rows[f"healthgym release, {label} ({args.repeats}x)"] = spread(times)
        prefect = [str(BIN / "prefect"), "--no-prompt"]
        rows["prefect deploy --all (4 deployments)"] = f"{timed([*prefect, 'deploy', '--all'], cwd=ROOT, env=served):6.1f} s"
        nightly = [*prefect, "deployment", "run", "healthgym-release/nightly-release", "--watch", "--watch-timeout", "600"]
        times = [
            timed([*nightly, "--param", f"seed={10 + i}", "--param", "patients=100"], cwd=work, env=served)
            for i in range(args.repeats)
        ]
        rows[f"nightly-release deployment by the worker ({args.repeats}x)"] = spread(times)
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/stack.sh"), "destroy"], env=stack, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    width = max(map(len, rows))
    print(f"{'step':<{width}}  wall time (median [min, max])")
    for name, value in rows.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
