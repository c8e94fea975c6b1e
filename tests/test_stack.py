"""The production profile (scripts/stack.sh): Prefect and MLflow servers on PostgreSQL and a worker.

One stack on ports and databases of its own: `up`, then `healthgym train` and `healthgym release`
with nothing changed but the standard variables; the MLflow REST API lists the run, the model
and its champion alias, the Prefect API the flow runs, PostgreSQL both databases; `prefect deploy
--all` from prefect.yaml, and the nightly-release deployment run by the worker writes a verified
release; `up` again is a no-op; `down` leaves no process of the stack running. Needs a PostgreSQL server at
PGHOST:PGPORT (127.0.0.1:5432 by default), as every machine of this project has.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import DEMO_DATA, DEMO_SCHEMA, ROOT
from test_pipeline import FAST

pytestmark = [pytest.mark.slow, pytest.mark.stack]
STACK = ROOT / "scripts" / "stack.sh"


def _psql(sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc", sql], capture_output=True, text=True, check=True
    ).stdout


def _healthgym(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """The command with the stack's variables and nothing else of the test's environment's Prefect/MLflow settings."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _get(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("pg_isready") is None or subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode != 0:
        pytest.skip("no PostgreSQL server answers at 127.0.0.1:5432")
    work = tmp_path_factory.mktemp("stack")
    prefix = f"hgtest_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "HEALTHGYM_"))}
    prefect_port, mlflow_port = _free_port(), _free_port()
    env |= {"HEALTHGYM_STACK_DIR": str(work / "stack"), "HEALTHGYM_DB_PREFIX": prefix, "PREFECT_PORT": str(prefect_port)}
    env |= {"MLFLOW_PORT": str(mlflow_port), "HEALTHGYM_HOME": str(ROOT), "HEALTHGYM_RELEASES": str(work / "releases")}
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ")
        )
        yield {
            "work": work,
            "env": env,
            "exports": exports,
            "up": up.stdout,
            "prefix": prefix,
            "ports": (prefect_port, mlflow_port),
        }
    finally:
        down = subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=120)
        print(down.stdout, down.stderr)
        for db in (f"{prefix}_prefect", f"{prefix}_mlflow"):
            subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-qc",
                    f"drop database if exists {db} with (force)",
                ]
            )


def test_the_stack_trains_releases_and_stops(stack):
    exports, env = stack["exports"], stack["env"]
    p_port, m_port = stack["ports"]
    assert exports == {"PREFECT_API_URL": f"http://127.0.0.1:{p_port}/api", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{m_port}"}
    databases = _psql("select datname from pg_database").split()
    assert f"{stack['prefix']}_prefect" in databases and f"{stack['prefix']}_mlflow" in databases

    again = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already running") == 3, again.stdout  # idempotent

    cwd = stack["work"] / "run"
    cwd.mkdir()
    served = {**env, **exports}  # the only difference from the embedded profile
    train = _healthgym(cwd, served, "train", str(DEMO_DATA), "--schema", str(DEMO_SCHEMA), *FAST)
    release = _healthgym(cwd, served, "release", "--name", "pbc", "--patients", "60", "--seed", "1")
    assert train.returncode == 0, train.stderr[-3000:]
    assert release.returncode == 0, release.stderr[-3000:]
    assert not (cwd / "mlflow.db").exists()  # nothing fell back to the embedded store
    mlflow = exports["MLFLOW_TRACKING_URI"]
    run_id = train.stdout.split("MLflow run: ")[1].split()[0]
    run = _get(f"{mlflow}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    assert run["info"]["status"] == "FINISHED" and run["data"]["tags"]
    (dataset,) = [d["dataset"] for d in run["inputs"]["dataset_inputs"]]  # the extract: digest and counts, no rows
    assert dataset["name"] == "pbc" and json.loads(dataset["profile"])["patients"] == 312
    champion = _get(f"{mlflow}/api/2.0/mlflow/registered-models/alias?name=pbc&alias=champion")["model_version"]
    assert champion["run_id"] == run_id
    flow_runs = _get(f"{exports['PREFECT_API_URL']}/flow_runs/filter", {})
    assert sorted(r["state_type"] for r in flow_runs) == ["COMPLETED", "COMPLETED"]
    folder = Path(release.stdout.split("Release folder: ")[1].split()[0])
    assert (folder / "manifest.json").exists()

    # the deployments of prefect.yaml; the nightly release, run by the stack's worker
    prefect = [str(Path(sys.executable).parent / "prefect"), "--no-prompt"]
    deploy = subprocess.run([*prefect, "deploy", "--all"], cwd=ROOT, env=served, capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    names = {d["name"] for d in _get(f"{exports['PREFECT_API_URL']}/deployments/filter", {})}
    assert {"nightly-release", "retrain-on-new-extract", "inbox-watcher", "manual-train"} <= names
    nightly = [*prefect, "deployment", "run", "healthgym-release/nightly-release", "--param", "seed=2", "--param", "patients=40"]
    ran = subprocess.run([*nightly, "--watch", "--watch-timeout", "300"], env=served, capture_output=True, text=True, timeout=400)
    assert ran.returncode == 0 and "Completed" in ran.stdout, ran.stdout[-2000:] + ran.stderr[-2000:]
    from diffusion.release import verify_release

    released = sorted((stack["work"] / "releases" / "pbc").iterdir())
    assert len(released) == 2 and verify_release(released[-1]) == []
    assert json.loads((released[-1] / "manifest.json").read_text())["seed"] == 2
    runs = _get(f"{mlflow}/api/2.0/mlflow/runs/search", {"experiment_ids": [run["info"]["experiment_id"]]})["runs"]
    kinds = sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "healthgym.kind") for r in runs)
    assert kinds == ["release", "release", "train"]

    pids = [int((stack["work"] / "stack" / f"{n}.pid").read_text()) for n in ("prefect-server", "mlflow-server", "worker")]
    assert all(_alive(p) for p in pids)
    down = subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and down.stdout.count("stopped") == 3, down.stdout
    groups = [subprocess.run(["pgrep", "-g", str(p)], capture_output=True, text=True).stdout.split() for p in pids]
    assert not any(_alive(p) for p in pids) and groups == [[], [], []]  # no process of ours, nor their children
