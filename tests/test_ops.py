"""Operations, end to end on the embedded defaults (ephemeral Prefect, MLflow in SQLite, a
temporary working folder): champion vs challenger, a release and its links, retraining when an
extract arrives (inbox or `healthgym submit`), and a release killed half-way.

The runs use a small toy cohort (an AR(1) lab with a static age) that a tiny model learns in a
few hundred steps, so "better" and "worse" on the default primary measure (the discriminator
AUC, lower is better) are far apart: about 0.998 after 1 step, 0.88 after 150, 0.77 after 300.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plumbing import OPEN_GATES, flags, run_script
from test_pipeline import ROOT, healthgym, registered_versions

TOY = [
    *flags(
        {
            "train.threads": "1",
            "model.base_channels": "16",
            "model.time_embed_dim": "16",
            "diffusion.steps": "50",
            "sampling.steps": "10",
            "train.eval_every": "50",
            "train.warmup_steps": "20",
            "train.learning_rate": "0.003",
            "train.batch_size": "64",
            "train.memorisation_patients": "32",
            # the decisions need models far apart: undecoded network output (calibrated decoding alone turns
            # even a 1-step network's noise into a passable AR(1) here), judged on a holdout of half the patients
            "encoding.calibrate": "false",
            "pipeline.holdout_fraction": "0.5",
            "evaluation.sequence_steps": "20",  # the decisions read the battery; its sequence member need not be long here
        }
    ),
    *flags(OPEN_GATES),  # every gate passes, so the decisions below are about the primary measure alone
]
STEPS = {"first": 150, "worse": 1, "better": 300}  # as in TRAIN_THREE

TOY_SCHEMA = """\
name: toy
id: pid
time: visit
regular: true
max_length: 8
columns:
  age: {type: real, static: true, min: 0, max: 120}
  v:   {type: real, transform: none}
"""


def write_toy(folder: Path, broken: bool = False, name: str = "toy.csv") -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n, length, phi = 240, 8, 0.8
    x = np.zeros((n, length))
    x[:, 0] = rng.normal(size=n)
    for k in range(1, length):
        x[:, k] = phi * x[:, k - 1] + np.sqrt(1 - phi**2) * rng.normal(size=n)
    df = pd.DataFrame(
        {
            "pid": np.repeat(np.arange(n), length),
            "visit": np.tile(np.arange(length), n),
            "age": np.repeat(rng.uniform(20, 80, size=n).round(1), length),
            "v": (5 + x).ravel().round(3),
        }
    )
    if broken:
        df.loc[df["pid"] == 7, "age"] = 250.0  # outside the schema's bounds: validation must fail
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / name, index=False)
    (folder / "toy.yaml").write_text(TOY_SCHEMA)
    return folder / name, folder / "toy.yaml"


def mlflow_client(cwd: Path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    return MlflowClient()


def prefect_db(cwd: Path) -> sqlite3.Connection:
    return sqlite3.connect(cwd / ".healthgym" / "prefect" / "prefect.db")


def artifacts(cwd: Path, flow_run_id: str) -> dict[str, tuple[str, str]]:
    """key -> (type, data) of the artifacts a Prefect flow run made."""
    with prefect_db(cwd) as con:
        rows = con.execute(
            "select key, type, data from artifact where replace(flow_run_id, '-', '') = ?", (flow_run_id.replace("-", ""),)
        ).fetchall()
    return {k: (t, d) for k, t, d in rows}


# ---- champion vs challenger, then a release ----------------------------------------------------
TRAIN_THREE = """
import sys
from flows.cli import main
data, schema, *flags = sys.argv[1:]
for label, steps in (("first", 150), ("worse", 1), ("better", 300)):
    rc = main(["train", data, "--schema", schema, *flags, "--set", f"train.max_steps={steps}"])
    from mlflow import MlflowClient

    print(f"@@ {label} {rc} {MlflowClient().get_model_version_by_alias('toy', 'champion').version}", flush=True)
import os
os.environ["HEALTHGYM_RELEASES"] = "subgroup-releases"
rc = main(["release", "--name", "toy", "--patients", "30", "--seed", "4", "--where", "age > 50"])
print(f"@@ subgroup {rc}", flush=True)
del os.environ["HEALTHGYM_RELEASES"]
rc = main(["release", "--name", "toy", "--patients", "60", "--seed", "3"])  # the latest: the one the model links to
print(f"@@ release {rc}", flush=True)
"""


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """Three trainings (first, worse, better), then a release, through the `healthgym` command's
    `main` in one process (one ephemeral Prefect start instead of four; `healthgym serve` runs its
    flows in one process too). tests/test_pipeline.py releases from a new process."""
    cwd = tmp_path_factory.mktemp("ops")
    data, schema = write_toy(cwd)
    res = run_script(TRAIN_THREE, [str(data), str(schema), *TOY], cwd, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = {"cwd": cwd, "data": data}
    chunk = res.stdout
    for label in STEPS:
        text, _, chunk = chunk.partition(f"@@ {label} ")
        line, _, chunk = chunk.partition("\n")
        rc, champion = line.split()
        assert rc == "0", res.stderr[-3000:]
        out[label] = {"stdout": text, "champion_after": champion, "run_id": text.split("MLflow run: ")[1].split()[0]}
    for label in ("subgroup", "release"):
        text, _, chunk = chunk.partition(f"@@ {label} ")
        rc, _, chunk = chunk.partition("\n")
        assert rc.strip() == "0", res.stderr[-3000:]
        out[label] = {
            "stdout": text,
            "path": text.split("Release folder: ")[1].splitlines()[0].strip(),
            "run_id": text.split("MLflow run: ")[1].split()[0],
        }
    return out


@pytest.mark.slow
def test_a_worse_model_leaves_the_champion_and_a_better_one_takes_its_place(ops):
    client = mlflow_client(ops["cwd"])
    assert [ops[k]["stdout"].strip().splitlines()[-1] for k in STEPS] == ["models:/toy/1", "models:/toy/2", "models:/toy/3"]
    # the champion alias: v1, still v1 after the worse model, v3 after the better one
    assert [ops[k]["champion_after"] for k in STEPS] == ["1", "1", "3"]
    runs = {k: client.get_run(ops[k]["run_id"]) for k in STEPS}
    auc = {k: r.data.metrics["discriminator_auc"] for k, r in runs.items()}
    assert auc["worse"] > auc["first"] > auc["better"], auc
    for k, r in runs.items():  # every gate passed: each decision is about the primary measure
        assert r.info.status == "FINISHED" and r.data.tags["evaluation.passed"] == "True"
        assert r.data.params["train.max_steps"] == str(STEPS[k])
    tags = {k: r.data.tags for k, r in runs.items()}
    assert tags["first"]["model.decision"] == "promoted: first model that passes every gate"
    assert tags["worse"]["model.promoted"] == "False"
    assert tags["worse"]["model.decision"].startswith("not promoted: discriminator_auc")
    assert "does not beat champion v1" in tags["worse"]["model.decision"]
    assert tags["better"]["model.promoted"] == "True"
    assert tags["better"]["model.decision"].startswith("promoted: discriminator_auc")
    assert "beats champion v1" in tags["better"]["model.decision"]
    for k, version in (("first", "1"), ("worse", "2"), ("better", "3")):
        mv = client.get_model_version("toy", version)
        assert mv.aliases == (["champion"] if k == "better" else [])
        assert mv.run_id == ops[k]["run_id"]
        assert mv.tags["decision"] == tags[k]["model.decision"]
        assert mv.tags["primary_metric"] == "discriminator_auc" and mv.tags["gates_passed"] == "True"
        assert mv.tags["extract.fingerprint"] == tags[k]["extract.fingerprint"]
        assert mv.tags["prefect.flow_run_id"] == tags[k]["prefect.flow_run_id"] != ""
    # the decision also shows on the Prefect flow run page
    decision = artifacts(ops["cwd"], tags["worse"]["prefect.flow_run_id"])["model-decision"]
    assert decision[0] == "markdown" and "does not beat champion v1" in decision[1]


@pytest.mark.slow
def test_the_release_verifies_and_links_model_runs_extract_and_flow_runs(ops, tmp_path):
    import shutil

    from diffusion.bundle.release import verify_release
    from diffusion.hashing import sha256

    cwd = ops["cwd"]
    rel = Path(ops["release"]["path"])
    assert [p for p in (cwd / "releases" / "toy").iterdir()] == [rel]
    assert {"synthetic.parquet", "synthetic.csv", "report.html", "metrics.json", "manifest.json"} <= {
        p.name for p in rel.iterdir()
    }
    assert verify_release(rel) == []
    tampered = tmp_path / "copy"
    shutil.copytree(rel, tampered)
    with open(tampered / "synthetic.csv", "a") as fh:
        fh.write("0,0,0,0\n")
    assert verify_release(tampered) == ["synthetic.csv"]  # the check can fail

    client = mlflow_client(cwd)
    manifest = json.loads((rel / "manifest.json").read_text())
    train = client.get_run(ops["better"]["run_id"]).data.tags
    release_run = client.get_run(ops["release"]["run_id"])
    release = release_run.data.tags
    fp = sha256(ops["data"])
    assert manifest["model_uri"] == "models:/toy@champion" and manifest["model_version"] == "3"
    assert manifest["training_run_id"] == ops["better"]["run_id"] and manifest["release_run_id"] == ops["release"]["run_id"]
    assert manifest["extract_fingerprint"] == fp and manifest["patients"] == 60 and manifest["seed"] == 3
    # the release run -> model version, training run, release folder, extract, both flow runs
    assert release_run.info.status == "FINISHED" and release["healthgym.kind"] == "release"
    assert release["model.name"] == "toy" and release["model.version"] == "3"
    assert release["training_run_id"] == ops["better"]["run_id"]
    assert release["release.path"] == str(rel) and release["extract.fingerprint"] == fp
    assert release["prefect.flow_run_id"] == manifest["flow_run_id"] != ""
    assert release["training.prefect_flow_run_id"] == train["prefect.flow_run_id"] != ""
    # the training run and the model version -> the release
    assert train["model.version"] == "3" and train["extract.fingerprint"] == fp
    assert train["release.path"] == str(rel) and train["release.run_id"] == ops["release"]["run_id"]
    assert train["release.prefect_flow_run_id"] == release["prefect.flow_run_id"]
    assert client.get_model_version("toy", "3").tags["release.path"] == str(rel)
    # both Prefect flow runs show the headline metrics as a table; the training shows its progress
    for flow_run_id in (train["prefect.flow_run_id"], release["prefect.flow_run_id"]):
        arts = artifacts(cwd, flow_run_id)
        kind, data = arts["headline-metrics"]
        assert kind == "table" and "discriminator_auc" in data and "privacy.dcr_share" in data
    kind, data = artifacts(cwd, train["prefect.flow_run_id"])["training-progress"]
    assert kind == "progress" and float(data) == 100.0


@pytest.mark.slow
def test_a_subgroup_release_holds_only_that_subgroup_and_is_judged_against_it(ops):
    rel = Path(ops["subgroup"]["path"])
    rel = rel if rel.is_absolute() else ops["cwd"] / rel
    manifest = json.loads((rel / "manifest.json").read_text())
    assert manifest["condition"] == "age > 50" and manifest["patients"] == 30
    syn = pd.read_csv(rel / "synthetic.csv")
    assert syn["pid"].nunique() == 30 and (syn["age"] > 50).all()
    counts = json.loads((rel / "metrics.json").read_text())["counts"]
    real = pd.read_csv(ops["data"]).drop_duplicates("pid")
    # the yardstick is the real subgroup: fewer holdout patients than the whole holdout (half of 240)
    assert (
        0 < counts["holdout_patients"] < 120 and counts["real_patients"] + counts["holdout_patients"] == (real["age"] > 50).sum()
    )


# ---- an extract arrives ----------------------------------------------------------------------
WATCH = """
import json, shutil, sys
from flows.cli import main
rc_submit = main(["submit", "extracts/toy.csv", "--schema", "extracts/toy.yaml", "--inbox", "inbox"])
from diffusion.config import Config
from flows.serve import watch_inbox
cfg = Config().with_overrides(sys.argv[1:]).to_dict()
first = watch_inbox(inbox="inbox", schema="extracts/toy.yaml", config=cfg)
shutil.copy("extracts/toy.csv", "inbox/toy-again.csv")  # the same bytes, dropped into the inbox
rc_again = main(["submit", "extracts/toy.csv", "--schema", "extracts/toy.yaml", "--inbox", "inbox"])
again = watch_inbox(inbox="inbox", schema="extracts/toy.yaml", config=cfg)
shutil.copy("extracts/broken.csv", "inbox/broken.csv")
broken = watch_inbox(inbox="inbox", schema="extracts/toy.yaml", config=cfg)
print("RESULT " + json.dumps({"rc_submit": rc_submit, "rc_again": rc_again, "first": first, "again": again, "broken": broken}))
"""


@pytest.mark.slow
def test_an_arriving_extract_retrains_once_and_a_broken_one_changes_nothing(tmp_path):
    from diffusion.hashing import sha256

    data, schema = write_toy(tmp_path / "extracts")
    write_toy(tmp_path / "extracts", broken=True, name="broken.csv")
    overrides = [a for a in TOY if a != "--set"] + ["train.max_steps=20"]
    res = run_script(WATCH, overrides, tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.split("RESULT ", 1)[1])
    fp = sha256(data)
    assert out["rc_submit"] == 0 and out["rc_again"] == 0
    assert "seen before: no retraining" in res.stdout
    # the submitted extract: exactly one retraining, which registers the champion
    assert len(out["first"]) == 1 and "error" not in out["first"][0], out["first"]
    assert out["first"][0]["fingerprint"] == fp and out["first"][0]["model_uri"] == "models:/toy/1"
    # the same file again (dropped in the inbox, and submitted once more): none
    assert out["again"] == []
    # a broken extract: one run, which fails validation and changes nothing
    assert len(out["broken"]) == 1 and "age" in out["broken"][0]["error"]
    assert registered_versions(tmp_path) == 1
    client = mlflow_client(tmp_path)
    assert str(client.get_model_version_by_alias("toy", "champion").version) == "1"
    assert not (tmp_path / "releases").exists()
    exp = client.get_experiment_by_name("healthgym-toy")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert failed.data.tags["validation.success"] == "False" and failed.data.tags["healthgym.extract_path"].endswith("broken.csv")
    assert list((tmp_path / "inbox").glob("*.submitted.json")) == []  # the submission was consumed
    with prefect_db(tmp_path) as con:
        flow_runs = con.execute(
            "select f.name, count(*) from flow_run r join flow f on r.flow_id = f.id group by f.name"
        ).fetchall()
        events = con.execute("select resource_id, payload from events where event = 'healthgym.extract.arrived'").fetchall()
    assert dict(flow_runs) == {"healthgym-watch-inbox": 3, "healthgym-train": 2}
    # `submit` emitted the event the deployment trigger of prefect.yaml matches, twice (once per submit)
    assert [e[0] for e in events] == [f"healthgym.extract.{fp}"] * 2
    payload = json.loads(events[0][1])
    assert payload["path"] == str(data.resolve()) and payload["schema"] == str(schema.resolve())
    assert payload["inbox"] == str((tmp_path / "inbox").resolve())


def test_submit_rejects_bad_input_with_exit_2(tmp_path):
    res = healthgym(tmp_path, "submit", "nope.csv")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "notes.txt").write_text("not an extract")
    res = healthgym(tmp_path, "submit", str(tmp_path / "notes.txt"))
    assert res.returncode == 2 and "must be a CSV or Parquet file" in " ".join(res.stderr.split())
    data, _ = write_toy(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: toy\nid: pid\n")
    res = healthgym(tmp_path, "submit", str(data), "--schema", str(tmp_path / "bad.yaml"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "inbox").exists() or list((tmp_path / "inbox").iterdir()) == []


# ---- a release killed half-way -----------------------------------------------------------------
WRITER = """
import sys
import numpy as np, pandas as pd
from diffusion.bundle.release import write_release
n = 3_000_000  # big enough that writing the CSV takes seconds
df = pd.DataFrame({"pid": np.arange(n) // 10, "visit": np.arange(n) % 10, "v": np.random.default_rng(0).normal(size=n)})
write_release(df, name="toy", manifest={"model_uri": "test"}, root=sys.argv[1])
print("FINISHED")
"""


def test_a_release_killed_mid_write_leaves_no_release_folder(tmp_path):
    import pandas as pd

    from diffusion.bundle.release import verify_release, write_release

    root = tmp_path / "releases"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    try:
        while not list(root.glob(".incoming/*/*/synthetic.csv")):  # Parquet written, CSV being written
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the writer never started its CSV"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # nothing under releases/toy/ (the folder is not even created); the half-written folder sits
    # in releases/.incoming/, without its manifest
    assert not (root / "toy").exists()
    (leftover,) = list((root / ".incoming").iterdir())
    assert not list(leftover.rglob("manifest.json"))
    # the next release is written whole and removes what the killed writer left
    path = write_release(
        pd.DataFrame({"pid": [1, 1], "visit": [0, 1], "v": [0.5, 0.7]}),
        name="toy",
        manifest={"model_uri": "test"},
        root=str(root),
    )
    assert [p for p in (root / "toy").iterdir()] == [Path(path)]
    assert verify_release(path) == []
    assert not (root / ".incoming").exists()


def test_prefect_yaml_deployments_run_existing_flows_and_the_trigger_matches_submit():
    import importlib
    import inspect

    import yaml
    from prefect.events import DeploymentEventTrigger
    from prefect.events.schemas.events import Resource

    from flows.serve import EVENT

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {"nightly-release", "retrain-on-new-extract", "inbox-watcher", "manual-train"} <= set(deployments)
    for d in deployments.values():  # every entrypoint is a flow that takes the parameters it is given
        module, _, name = d["entrypoint"].partition(":")
        fn = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name).fn
        params = set(inspect.signature(fn).parameters)
        assert set(d.get("parameters") or {}) <= params, d["name"]
        for t in d.get("triggers") or []:
            assert set(t.get("parameters") or {}) <= params, d["name"]
    (trigger,) = deployments["retrain-on-new-extract"]["triggers"]
    trigger = DeploymentEventTrigger(**{k: v for k, v in trigger.items() if k != "type"})
    # the event `healthgym submit` emits (see flows/serve.py _emit) is the one the trigger waits for
    assert trigger.expect == {EVENT}
    assert trigger.match.matches(Resource({"prefect.resource.id": "healthgym.extract." + "0" * 64}))
    assert not trigger.match.matches(Resource({"prefect.resource.id": "prefect.flow-run.x"}))
    assert trigger.parameters == {"inbox": "{{ event.payload.inbox }}", "schema": "{{ event.payload.schema }}"}
