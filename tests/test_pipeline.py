"""End to end through the `healthgym` command, as a user runs it: train -> register -> release,
sample from the champion in a new process, and bad input that changes nothing."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from plumbing import OPEN_GATES, flags

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "flows" / "data" / "pbcseq.csv"
DEMO_SCHEMA = ROOT / "flows" / "data" / "pbc.yaml"

FAST = [
    *flags(
        {
            "train.max_steps": "40",
            "train.eval_every": "20",
            "diffusion.steps": "50",
            "sampling.steps": "5",
            "model.base_channels": "16",
            "model.time_embed_dim": "16",
            "train.memorisation_patients": "32",
            # the plumbing does not judge the detector: the sequence member trains a few steps only
            "evaluation.sequence_steps": "20",
        }
    ),
    *flags(OPEN_GATES),  # an untrained model cannot pass the fidelity gates; these runs test the plumbing
]


def healthgym(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_HOME", "HEALTHGYM_"))}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def registered_versions(cwd: Path) -> int:
    db = cwd / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from model_versions").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def real_row_strings(n: int = 25) -> list[str]:
    """Exact lab sequences of real training rows, as they would appear in any CSV-like dump."""
    df = pd.read_csv(DEMO_DATA)
    labs = ["bili", "albumin", "ast", "protime"]
    full = df.dropna(subset=labs).sample(n, random_state=1)
    return [",".join(repr(float(v)) for v in row) for row in full[labs].to_numpy()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("pipeline")
    res = healthgym(cwd, "train", str(DEMO_DATA), "--schema", str(DEMO_SCHEMA), *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    return cwd, res


@pytest.mark.slow
def test_train_registers_a_champion_and_logs_the_run(trained):
    cwd, res = trained
    assert res.stdout.strip().splitlines()[-1] == "models:/pbc/1"
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    client = MlflowClient()
    mv = client.get_model_version_by_alias("pbc", "champion")
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["diffusion.steps"] == "50"
    assert len(run.data.params["extract.fingerprint"]) == 64
    assert run.data.params["extract.patients"] == "312"
    (dataset_input,) = run.inputs.dataset_inputs  # the run page's Datasets: digest, schema, counts, no rows
    ds = dataset_input.dataset
    assert ds.name == "pbc" and run.data.params["extract.fingerprint"].startswith(ds.digest)
    assert json.loads(ds.profile) == {"sha256": run.data.params["extract.fingerprint"], "rows": 1945, "patients": 312}
    assert set(json.loads(ds.schema)["columns"]) == {c for c in pd.read_csv(DEMO_DATA).columns if c not in ("id", "day")}
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    assert "discriminator_auc" in run.data.metrics and "privacy.dcr_share" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train.val_loss")) >= 2
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/report.html" in arts and "evaluation/metrics.json" in arts
    assert "training/decoding_calibration.json" in {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert mv.tags["gates_passed"] == "True"


@pytest.mark.slow
def test_sample_from_the_champion_in_a_new_process(trained):
    cwd, _ = trained
    res = healthgym(cwd, "sample", "--patients", "50", "--out", "x.csv")  # no --model: the champion (contract section 3)
    assert res.returncode == 0, res.stderr[-3000:]
    out = pd.read_csv(cwd / "x.csv")
    real = pd.read_csv(DEMO_DATA)
    assert list(out.columns) == list(real.columns)
    assert out["id"].nunique() == 50
    assert (out.groupby("id")[["futime", "status", "trt", "age", "sex"]].nunique() == 1).all().all()
    assert out.groupby("id")["day"].apply(lambda s: s.is_monotonic_increasing and s.is_unique).all()
    assert set(out["sex"]) <= {"f", "m"} and set(out["stage"]) <= {1, 2, 3, 4}


@pytest.mark.slow
def test_the_registered_model_is_code_with_a_signature_and_serves_requests_over_http(trained):
    """The pyfunc is logged from code (no pickled object) with a request signature and an input
    example; `mlflow models serve` answers a request for N patients meeting a condition."""
    import socket
    import time
    import urllib.request

    import yaml

    cwd, _ = trained
    (mlmodel,) = [p for p in (cwd / "mlruns").rglob("MLmodel")]
    spec = yaml.safe_load(mlmodel.read_text())
    flavor = spec["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and not list(mlmodel.parent.rglob("python_model.pkl"))
    assert [c["name"] for c in json.loads(spec["signature"]["inputs"])] == ["patients", "seed", "where"]
    assert json.loads((mlmodel.parent / "input_example.json").read_text())["columns"] == ["patients", "seed"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_HOME"))}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/pbc@champion", "--env-manager", "local"]
    server = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the scoring server did not start"
                time.sleep(1)
        body = {"dataframe_split": {"columns": ["patients", "seed", "where"], "data": [[4, 1, "sex == 'm'"]]}}
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            text = resp.read().decode().replace("NaN", "null")
        out = pd.DataFrame(json.loads(text)["predictions"])
        assert out["id"].nunique() == 4 and set(out["sex"]) == {"m"}
        assert not set(out["id"]) & set(pd.read_csv(DEMO_DATA)["id"])  # no real id
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.mark.slow
def test_release_is_whole_verified_and_holds_no_real_rows(trained):
    cwd, _ = trained
    res = healthgym(cwd, "release", "--name", "pbc", "--patients", "60", "--seed", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    from diffusion.bundle.release import verify_release

    releases = list((cwd / "releases" / "pbc").iterdir())
    assert len(releases) == 1
    rel = releases[0]
    assert {"synthetic.parquet", "synthetic.csv", "report.html", "metrics.json", "manifest.json"} <= {
        p.name for p in rel.iterdir()
    }
    assert verify_release(rel) == []
    manifest = json.loads((rel / "manifest.json").read_text())
    assert manifest["patients"] == 60 and manifest["seed"] == 3 and manifest["model_version"] == "1"
    assert len(manifest["extract_fingerprint"]) == 64
    # no real patient row anywhere in MLflow's store, Prefect's home or the release
    needles = [s.encode() for s in real_row_strings()]
    for root in (cwd / "mlruns", cwd / ".healthgym", cwd / "releases"):
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert not any(n in data for n in needles), f
    db = (cwd / "mlflow.db").read_bytes()
    assert not any(n in db for n in needles)


@pytest.mark.slow
def test_a_broken_extract_changes_nothing(trained, tmp_path):
    cwd, _ = trained
    bad = pd.read_csv(DEMO_DATA)
    bad.loc[5, "sex"] = "x"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    before = registered_versions(cwd)
    res = healthgym(cwd, "train", str(tmp_path / "bad.csv"), "--schema", str(DEMO_SCHEMA), *FAST)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "sex" in res.stderr
    assert registered_versions(cwd) == before
    assert len(list((cwd / "releases" / "pbc").iterdir())) <= 1
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    client = MlflowClient()
    exp = client.get_experiment_by_name("healthgym-pbc")
    failed = client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")
    assert failed, "the failed validation must leave a FAILED run"
    run = failed[0]
    assert run.data.tags["validation.success"] == "False"
    assert "validation/result.json" in {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    result = client.download_artifacts(run.info.run_id, "validation/result.json", str(tmp_path))
    assert "sex" in Path(result).read_text()


def test_bad_flags_and_missing_files_exit_2(tmp_path):
    res = healthgym(tmp_path, "train", "nope.csv", "--schema", str(DEMO_SCHEMA))
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = healthgym(tmp_path, "train", str(DEMO_DATA), "--schema", str(DEMO_SCHEMA), "--set", "train.nope=1")
    assert res.returncode == 2 and "train.nope" in res.stderr
    res = healthgym(tmp_path, "sample", "--model", str(tmp_path), "--patients", "5", "--out", "x.csv")
    assert res.returncode == 2 and "model folder" in " ".join(res.stderr.split())  # the paragraph wraps where the path ends
    assert not (tmp_path / "mlflow.db").exists() or registered_versions(tmp_path) == 0
