"""The production profile (scripts/stack.sh): Prefect and MLflow servers on PostgreSQL and a worker.

One stack on ports and databases of its own, and a working folder (HEALTHGYM_HOME) of its own,
shared by the tests below in order:
- `up`, then `healthgym train` and `healthgym release` with nothing changed but the standard
  variables; the REST APIs list the run, its dataset, the champion and the flow runs; PostgreSQL
  holds both databases; `prefect deploy --all` from prefect.yaml, and the nightly-release
  deployment run by the worker writes a verified release; `up` again is a no-op;
- `healthgym submit`, twice at once, with two workers polling: exactly one training, while a
  second cohort trains (data-parallel) from the command line: nothing of one lands in the other;
- a worker killed mid-training: its flow run is Crashed, `prefect flow-run retry` resumes it from
  its checkpoint in the same MLflow run, and one model version is registered;
- an MLflow server that fails during a release (a fault-injecting proxy) leaves no release folder;
- `down` leaves no process of the stack running.
Needs a PostgreSQL server at 127.0.0.1:5432, as every machine of this project has.
"""

import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import DEMO_DATA, DEMO_SCHEMA, ROOT
from test_ops import TOY, write_toy
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


def _until(what: str, check, timeout: float, every: float = 1.0):
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = check()
        if out:
            return out
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def _flow_runs(api: str, flow: str) -> list[dict]:
    flows = {f["id"]: f["name"] for f in _get(f"{api}/flows/filter", {})}
    return [r for r in _get(f"{api}/flow_runs/filter", {"limit": 200}) if flows.get(r["flow_id"]) == flow]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _model_versions(mlflow: str, name: str) -> list[dict]:
    body = _get(f"{mlflow}/api/2.0/mlflow/model-versions/search?filter=name%3D%27{name}%27")
    return body.get("model_versions", [])


def _worker(env: dict, log: Path) -> subprocess.Popen:
    """One more worker on the stack's pool, in its own process group."""
    prefect = str(Path(sys.executable).parent / "prefect")
    return subprocess.Popen(
        [prefect, "worker", "start", "--pool", "healthgym", "--type", "process"],
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("pg_isready") is None or subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode != 0:
        pytest.skip("no PostgreSQL server answers at 127.0.0.1:5432")
    work = tmp_path_factory.mktemp("stack")
    prefix = f"hgtest_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "HEALTHGYM_"))}
    prefect_port, mlflow_port = _free_port(), _free_port()
    env |= {"HEALTHGYM_STACK_DIR": str(work / "stack"), "HEALTHGYM_DB_PREFIX": prefix, "PREFECT_PORT": str(prefect_port)}
    # the worker's runs work in HEALTHGYM_HOME (inbox, checkpoints, ledger): a folder of the test's
    # own, holding links to the code that prefect.yaml's entrypoints name
    home = work / "home"
    home.mkdir()
    for package in ("flows", "tasks", "diffusion", "evaluation", "expectations"):
        (home / package).symlink_to(ROOT / package)
    env |= {"MLFLOW_PORT": str(mlflow_port), "HEALTHGYM_HOME": str(home), "HEALTHGYM_RELEASES": str(work / "releases")}
    env |= {"HEALTHGYM_HEARTBEAT_SECONDS": "30", "HEALTHGYM_ZOMBIE_SECONDS": "45"}  # prefect.yaml's pool: healthgym
    env["PREFECT_WORKER_QUERY_SECONDS"] = "2"  # the workers poll often: the test waits less
    env["PGPASSWORD"] = f"hg-secret-{uuid.uuid4().hex}"  # trust authentication ignores it; it must show up nowhere
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines() if line.startswith("export ")
        )
        yield {
            "work": work,
            "home": home,
            "env": env,
            "exports": exports,
            "up": up.stdout,
            "prefix": prefix,
            "ports": (prefect_port, mlflow_port),
        }
    finally:
        destroy = subprocess.run(["bash", str(STACK), "destroy"], env=env, capture_output=True, text=True, timeout=120)
        print(destroy.stdout, destroy.stderr)  # stopped, both databases dropped


def test_the_stack_trains_releases_and_stops(stack):
    exports, env = stack["exports"], stack["env"]
    p_port, m_port = stack["ports"]
    assert exports == {"PREFECT_API_URL": f"http://127.0.0.1:{p_port}/api", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{m_port}"}
    databases = _psql("select datname from pg_database").split()
    assert f"{stack['prefix']}_prefect" in databases and f"{stack['prefix']}_mlflow" in databases

    again = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("already running") == 3, again.stdout  # idempotent
    # the zombie-flow automation: a run without a heartbeat for HEALTHGYM_ZOMBIE_SECONDS is marked Crashed
    (zombie,) = [a for a in _get(f"{exports['PREFECT_API_URL']}/automations/filter", {}) if "heartbeat" in a["name"]]
    assert zombie["trigger"]["posture"] == "Proactive" and zombie["trigger"]["within"] == 45.0
    assert zombie["trigger"]["after"] == ["prefect.flow-run.heartbeat"] and zombie["actions"][0]["state"] == "CRASHED"

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
    from diffusion.bundle.release import verify_release

    released = sorted((stack["work"] / "releases" / "pbc").iterdir())
    assert len(released) == 2 and verify_release(released[-1]) == []
    assert json.loads((released[-1] / "manifest.json").read_text())["seed"] == 2
    runs = _get(f"{mlflow}/api/2.0/mlflow/runs/search", {"experiment_ids": [run["info"]["experiment_id"]]})["runs"]
    kinds = sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "healthgym.kind") for r in runs)
    assert kinds == ["release", "release", "train"]


def test_two_submissions_at_once_train_once_while_another_cohort_trains(stack):
    """Two workers poll; one extract is submitted twice at once: one training. Meanwhile a second
    cohort trains from the command line, data-parallel: each registry entry holds its own model."""
    import mlflow as mlflow_client

    from diffusion.bundle.folder import HealthGymModel
    from expectations.reading import fingerprint

    env, exports = stack["env"], stack["exports"]
    api, mlflow = exports["PREFECT_API_URL"], exports["MLFLOW_TRACKING_URI"]
    served = {**env, **exports, "PYTHONPATH": str(ROOT)}
    second = _worker(served, stack["work"] / "worker-2.log")
    try:
        before = len(_model_versions(mlflow, "pbc"))
        inbox = stack["home"] / "inbox"
        extract = stack["work"] / "pbc-2031-05.csv"
        shutil.copy(DEMO_DATA, extract)  # a new extract: the same rows, a new file
        with open(extract, "a") as fh:
            fh.write("\n")  # other bytes, another fingerprint
        cmd = [sys.executable, "-m", "flows.cli", "submit", str(extract), "--schema", str(DEMO_SCHEMA), "--inbox", str(inbox)]
        submits = [subprocess.Popen([*cmd, *FAST], cwd=stack["work"], env=served, stdout=subprocess.PIPE) for _ in range(2)]
        cohort = stack["work"] / "cohort"
        toy, toy_schema = write_toy(cohort / "extracts")
        toy_args = [str(toy), "--schema", str(toy_schema), *TOY, "--set", "train.max_steps=40", "--set", "train.processes=2"]
        other = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "train", *toy_args],
            cwd=cohort,
            env=served,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert [p.wait(timeout=120) for p in submits] == [0, 0]

        def trained():
            runs = _flow_runs(api, "healthgym-train")
            return runs if any(r["state_type"] == "COMPLETED" and r["parent_task_run_id"] for r in runs) else None

        _until("the retraining", trained, 400, every=3)
        triggered_by = _get(f"{api}/deployments/name/healthgym-watch-inbox/retrain-on-new-extract")["id"]

        def watchers_done():  # both events' watcher runs ended (the scheduled scans may add more)
            triggered = [r for r in _flow_runs(api, "healthgym-watch-inbox") if r["deployment_id"] == triggered_by]
            return len(triggered) >= 2 and all(r["state_type"] == "COMPLETED" for r in triggered)

        _until("the triggered watcher runs", watchers_done, 120, every=2)
        retrained = [r for r in _flow_runs(api, "healthgym-train") if r["parent_task_run_id"]]
        assert len(retrained) == 1, retrained  # exactly one training for the one new extract
        versions = _model_versions(mlflow, "pbc")
        assert len(versions) == before + 1
        assert not list(inbox.glob("*.submitted.json"))  # the record was consumed once
        out, err = other.communicate(timeout=600)
        assert other.returncode == 0, err[-3000:]
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        try:
            second.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: the worker did not stop in time
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=60)

    # the two cohorts trained at the same time: each run, dataset and registered folder is its own
    mlflow_client.set_tracking_uri(mlflow)
    newest = max(versions, key=lambda v: int(v["version"]))
    toy_run = out.split("MLflow run: ")[1].split()[0]
    (toy_version,) = [v for v in _model_versions(mlflow, "toy") if v["run_id"] == toy_run]
    for name, data, run_id, version, processes in (
        ("pbc", extract, newest["run_id"], newest["version"], 1),
        ("toy", toy, toy_run, toy_version["version"], 2),
    ):
        run = _get(f"{mlflow}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
        tags = _tags(run)
        assert tags["model.name"] == name and tags["extract.fingerprint"] == fingerprint(data)
        (dataset,) = [d["dataset"] for d in run["inputs"]["dataset_inputs"]]
        assert dataset["name"] == name
        folder = Path(mlflow_client.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(cohort / name)))
        model = HealthGymModel.load(next(folder.rglob("encoder.json")).parent)
        assert model.schema.name == name and model.meta.training.steps == 40
        assert model.meta.training.processes == processes


LONGER = ["train.max_steps=60", "train.checkpoint_every=10", "train.eval_every=30"]


def test_a_worker_killed_mid_training_is_resumed_from_its_checkpoint_by_a_retry(stack):
    from diffusion.config import Config

    env, exports = stack["env"], stack["exports"]
    api, mlflow = exports["PREFECT_API_URL"], exports["MLFLOW_TRACKING_URI"]
    overrides = [a for a in FAST if a != "--set"] + LONGER
    config = Config().with_overrides(overrides).to_dict()
    deployment = _get(f"{api}/deployments/name/healthgym-train/manual-train")
    params = {"data": str(DEMO_DATA), "schema": str(DEMO_SCHEMA), "config": config}
    flow_run = _get(f"{api}/deployments/{deployment['id']}/create_flow_run", {"parameters": params})["id"]
    checkpoints = stack["home"] / ".healthgym" / "checkpoints"
    _until("a checkpoint", lambda: glob.glob(str(checkpoints / "*" / "checkpoint.pt")), 300, every=0.5)
    worker = int((stack["work"] / "stack" / "worker.pid").read_text())
    os.killpg(worker, signal.SIGKILL)  # the worker and what it started, mid-training
    query = {"experiment_ids": ["1"], "filter": f"tags.`prefect.flow_run_id` = '{flow_run}'"}
    early = _get(f"{mlflow}/api/2.0/mlflow/runs/search", query).get("runs", [])
    # on a loaded machine the kill can land after training ended and the model was kept: the retry then
    # continues from the kept model instead of the checkpoint
    kept_first = bool(early) and "healthgym.model_folder" in _tags(early[0])

    def crashed():
        state = _get(f"{api}/flow_runs/{flow_run}")["state"]
        return state if state["type"] in ("CRASHED", "FAILED") else None

    state = _until("the killed run marked Crashed", crashed, 120, every=2)  # by its process, or the heartbeat automation
    assert state["type"] == "CRASHED"
    prefect = [str(Path(sys.executable).parent / "prefect"), "--no-prompt"]
    served = {**env, **exports}
    retry = subprocess.run([*prefect, "flow-run", "retry", flow_run], env=served, capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True, timeout=300)
    assert "worker: started" in up.stdout, up.stdout  # only the worker was missing

    def finished():
        state = _get(f"{api}/flow_runs/{flow_run}")["state"]["type"]
        return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

    assert _until("the retried run", finished, 400, every=3) == "COMPLETED"
    (run,) = _get(f"{mlflow}/api/2.0/mlflow/runs/search", query)["runs"]  # one MLflow run for the flow run
    assert run["info"]["status"] == "FINISHED" and _tags(run)["healthgym.attempts"] == "2"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["train.steps"] == 60 and (metrics["train.resumed_from"] >= 10 or kept_first)  # resumed, not restarted
    assert len([v for v in _model_versions(mlflow, "pbc") if v["run_id"] == run["info"]["run_id"]]) == 1
    assert not glob.glob(str(checkpoints / "*" / "checkpoint.pt"))  # finished: its checkpoint is gone


class _Faulty(BaseHTTPRequestHandler):
    """Forwards to the MLflow server, but answers 503 to requests that match the fault."""

    upstream: str = ""
    fault: tuple[str, str, bytes] = ("", "", b"")  # (method, path fragment, body fragment)
    faults = 0

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        method, path, fragment = self.fault
        if self.command == method and path in self.path and fragment in body:
            type(self).faults += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    "fault",
    [
        ("PUT", "/mlflow-artifacts/artifacts/", b""),  # the evaluation's upload: before anything is written
        ("POST", "/runs/set-tag", b"release.path"),  # recording the release: its folder is complete, not yet in place
    ],
    ids=["artifact-upload", "release-record"],
)
def test_an_mlflow_server_failing_during_a_release_leaves_no_release(stack, fault):
    env, exports = stack["env"], stack["exports"]
    mlflow = exports["MLFLOW_TRACKING_URI"]
    releases = stack["work"] / "releases"
    before = sorted(p.name for p in (releases / "pbc").iterdir())
    champion = _get(f"{mlflow}/api/2.0/mlflow/registered-models/alias?name=pbc&alias=champion")["model_version"]
    handler = type("Faulty", (_Faulty,), {"upstream": mlflow, "fault": fault, "faults": 0})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        faulty = {**env, **exports, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{proxy.server_port}"}
        faulty |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
        cwd = stack["work"] / f"fault-{handler.faults}-{uuid.uuid4().hex[:6]}"
        cwd.mkdir()
        release = _healthgym(cwd, faulty, "release", "--name", "pbc", "--patients", "40", "--seed", "7")
    finally:
        proxy.shutdown()
    assert handler.faults >= 1  # the fault was met
    assert release.returncode == 1, release.stdout + release.stderr[-2000:]
    assert sorted(p.name for p in (releases / "pbc").iterdir()) == before  # no release, whole or partial
    assert not any((releases / ".incoming").glob("*/*")) if (releases / ".incoming").exists() else True
    after = _get(f"{mlflow}/api/2.0/mlflow/registered-models/alias?name=pbc&alias=champion")["model_version"]
    assert after["version"] == champion["version"] and after.get("tags") == champion.get("tags")
    query = {"experiment_ids": ["1"], "filter": "tags.`healthgym.kind` = 'release' and attributes.status != 'FINISHED'"}
    failed = _get(f"{mlflow}/api/2.0/mlflow/runs/search", query).get("runs", [])
    assert failed and all(r["info"]["status"] == "FAILED" for r in failed)


def test_no_credential_reaches_a_log_a_tag_or_an_artifact(stack):
    secret = stack["env"]["PGPASSWORD"].encode()
    leaked = []
    for folder, _, files in os.walk(stack["work"]):  # logs, artifacts, releases, working folders (links not followed)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink() and secret in path.read_bytes():
                leaked.append(str(path))
    for db in (f"{stack['prefix']}_prefect", f"{stack['prefix']}_mlflow"):  # runs, tags, params, flow runs, logs
        dump = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--data-only", db], capture_output=True, check=True
        )
        assert len(dump.stdout) > 10_000  # the dump holds the runs
        if secret in dump.stdout:
            leaked.append(db)
    assert leaked == []


def test_down_leaves_no_process_of_the_stack(stack):
    env = stack["env"]
    pids = [int((stack["work"] / "stack" / f"{n}.pid").read_text()) for n in ("prefect-server", "mlflow-server", "worker")]
    assert all(_alive(p) for p in pids)
    down = subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and down.stdout.count("stopped") == 3, down.stdout
    groups = [subprocess.run(["pgrep", "-g", str(p)], capture_output=True, text=True).stdout.split() for p in pids]
    assert not any(_alive(p) for p in pids) and groups == [[], [], []]  # no process of ours, nor their children
