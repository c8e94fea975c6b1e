"""A failure after training never loses the trained model.

Each step after training (decoding calibration, sampling, evaluation, registration) is made to
fail in turn, through the `healthgym train` command in one process: the command exits 1 with
one paragraph naming the step and the kept model's URI, the MLflow run holds a loadable model
folder, and nothing is registered. Then `--from-model` finishes one of them without training
again: the kept run registers the model.
"""

import json
import subprocess
import sys

import pytest
import yaml
from simulated import SCHEMA, population
from test_pipeline import FAST, ROOT

pytestmark = pytest.mark.slow

SCRIPT = """
import contextlib, io, json, sys
from unittest import mock
import flows.pipeline as pipeline
import tasks.stages as stages
from flows.cli import main

args = json.loads(sys.argv[1])
steps = {"calibration": (stages, "calibrate"), "sampling": (stages, "sample"),
         "evaluation": (stages, "evaluate"), "registration": (pipeline, "register")}
for step, (module, name) in steps.items():
    def boom(*a, **k):
        raise RuntimeError("injected failure")
    err = io.StringIO()
    with mock.patch.object(module, name, boom), contextlib.redirect_stderr(err):
        rc = main(args)
    print(json.dumps({"step": step, "rc": rc, "stderr": err.getvalue()}), flush=True)
"""


def _kept_uri(stderr: str) -> str:
    words = " ".join(stderr.split()).split()
    uris = [w.rstrip(";.,") for w in words if w.startswith("runs:/") and w.rstrip(";.,").endswith("/model_folder")]
    assert uris, stderr
    return uris[0]


def test_every_step_after_training_fails_without_losing_the_model(tmp_path):
    data, schema = tmp_path / "sim.csv", tmp_path / "sim.yaml"
    population(60, seed=3).to_csv(data, index=False)
    schema.write_text(yaml.safe_dump(SCHEMA))
    env_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": env_db, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(ROOT)}
    import os

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_HOME"))}, **env}
    args = ["train", str(data), "--schema", str(schema), *FAST, "--set", "encoding.calibrate=true"]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["step"] for r in results] == ["calibration", "sampling", "evaluation", "registration"], proc.stderr[-3000:]

    import mlflow
    from mlflow import MlflowClient

    from diffusion.bundle.folder import HealthGymModel

    mlflow.set_tracking_uri(env_db)
    client = MlflowClient()
    uris = []
    for r in results:
        assert r["rc"] == 1, r
        message = " ".join(r["stderr"].split())
        assert f"{r['step'].replace('calibration', 'decoding calibration')} failed after training" in message, message
        assert "Traceback" not in r["stderr"]
        uri = _kept_uri(r["stderr"])
        assert f"--from-model {uri}" in message
        run_id = uri.split("/")[1]
        assert client.get_run(run_id).info.status == "FAILED"
        folder = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / r["step"]))
        model = HealthGymModel.load(folder)  # a whole, loadable model folder
        assert len(model.sample(3, seed=0)) > 0
        uris.append(uri)
    assert not client.search_registered_models()  # nothing half-registered

    # finish the run whose evaluation failed: no training, the kept run registers the model
    finish = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args, "--from-model", uris[2]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finish.returncode == 0, finish.stderr[-3000:]
    versions = client.search_model_versions("name='sim'")
    assert len(versions) == 1 and versions[0].run_id == uris[2].split("/")[1]
    run = client.get_run(versions[0].run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "train.steps")) == 1  # trained once, not again
    opened = [r for r in client.search_runs([run.info.experiment_id]) if r.info.status == "KILLED"]
    assert [r.data.tags.get("healthgym.finished_in") for r in opened] == [run.info.run_id]  # says where it went on

    # a kept model is finished only with the extract it was trained on
    other = tmp_path / "other.csv"
    population(60, seed=4).to_csv(other, index=False)
    wrong = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", str(other), "--schema", str(schema), *FAST, "--from-model", uris[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert wrong.returncode == 2 and "trained on another extract" in wrong.stderr, wrong.stderr[-2000:]
    assert len(client.search_model_versions("name='sim'")) == 1
