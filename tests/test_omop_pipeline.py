"""End to end through the `healthgym` command, as the README runs it: the bundled PBC cohort
loaded into an OMOP database -> `omop extract` -> `validate` -> `train` (tiny) -> `release` into
OMOP tables of another schema; the synthetic tables answer the source's SQL, hold no real id and
match the release. On PostgreSQL with a password only in the environment (it appears nowhere),
and on SQLite files with no server (training from a SQL source file). And the watcher, on a
SQL source, retrains once per changed result (the training itself stubbed: the decision is
what is tested here; tests/test_ops.py runs real retraining on files)."""

import json
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from databases import pg_database, pg_execute, pg_url
from plumbing import run_script
from test_pipeline import DEMO_DATA, DEMO_SCHEMA, FAST, ROOT

from expectations.omop.mapping import load_mapping

MAPPING = ROOT / "flows" / "data" / "pbc_omop_mapping.yaml"
SECRETS = ("pgpass-env-7Qx", "src-url-pw-3Kd", "target-url-pw-9Zm")

RUN = """
import os, sqlite3, sys
import pandas as pd
from flows.cli import main
demo, demo_schema, mapping, *flags = sys.argv[1:]
def step(label, *argv):
    print(f"@@ {label} {main(list(argv))}", flush=True)
if os.environ.get("HG_SOURCE_URL"):  # PostgreSQL: the URLs (passwords in them) only in the environment
    step("load", "omop", "load", demo, "--mapping", mapping, "--url-env", "HG_SOURCE_URL", "--cdm-schema", "cdm")
    step("extract", "omop", "extract", "--url-env", "HG_SOURCE_URL", "--cdm-schema", "cdm", "--mapping", mapping,
         "--out", "extract.csv", "--schema-out", "pbc.yaml")
    data = "extract.csv"
else:  # SQLite files, no server; training reads the extract from a table through a SQL source file
    step("load", "omop", "load", demo, "--mapping", mapping, "--url", "sqlite:///cdm.db")
    step("extract", "omop", "extract", "--url", "sqlite:///cdm.db", "--mapping", mapping, "--out", "extract.parquet",
         "--schema-out", "pbc.yaml")
    with sqlite3.connect("warehouse.db") as con:
        pd.read_parquet("extract.parquet").sample(frac=1, random_state=0).to_sql("extract", con, index=False)
    open("extract.source.yaml", "w").write("url: sqlite:///warehouse.db\\ntable: extract\\norder_by: [id, day]\\n")
    data = "extract.source.yaml"
step("validate", "validate", data, "--schema", "pbc.yaml")
step("train", "train", data, "--schema", "pbc.yaml", *flags)
target = ["--to-db-env", "HG_TARGET_URL", "--db-schema", "synth"] if os.environ.get("HG_TARGET_URL") else ["--to-db", "sqlite:///synthetic.db"]
step("release", "release", "--name", "pbc", "--patients", "80", "--seed", "2", *target, "--omop", mapping)
step("again", "release", "--name", "pbc", "--patients", "80", "--seed", "3", *target, "--omop", mapping)
"""

# the same question on the source and the synthetic tables: measurements per person per concept
PER_PERSON = "SELECT person_id, measurement_concept_id, COUNT(*) FROM {s}measurement GROUP BY person_id, measurement_concept_id"


def run_pipeline(cwd: Path, extra_env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    drop = ("MLFLOW_", "PREFECT_HOME", "HEALTHGYM_", "HG_", "PG")
    res = run_script(RUN, [str(DEMO_DATA), str(DEMO_SCHEMA), str(MAPPING), *FAST], cwd, timeout=900, drop=drop, env=extra_env)
    codes = dict(line.split()[1:3] for line in res.stdout.splitlines() if line.startswith("@@ "))
    return res, codes


def check_release(cwd: Path, codes: dict[str, str], res, query) -> dict:
    """The OMOP checks, `query(sql with {s} for the schema prefix, schema)` running on either database."""
    assert [codes.get(k) for k in ("load", "extract", "validate", "train", "release")] == ["0"] * 5, res.stderr[-3000:]
    assert codes["again"] == "2" and "already has table" in " ".join(res.stderr.split())  # never overwritten
    (release,) = sorted((cwd / "releases" / "pbc").iterdir())  # the refused one left no folder
    manifest = json.loads((release / "manifest.json").read_text())
    synthetic = pd.read_parquet(release / "synthetic.parquet")
    db = manifest["database"]
    assert db["kind"] == "omop" and db["anchor_date"] == "2000-01-01"
    assert db["rows"] == {t: query(f"SELECT COUNT(*) FROM {{s}}{t}", "syn")[0][0] for t in db["rows"]}
    mapping = load_mapping(MAPPING)
    source, synth = query(PER_PERSON, "src"), query(PER_PERSON, "syn")  # the same SQL answers on both
    assert source and synth
    concepts = {c.concept_id for c in mapping.columns if c.table == "measurement"}
    assert {r[1] for r in synth} <= concepts and {r[1] for r in source} == concepts
    for col in (c for c in mapping.columns if c.table == "measurement"):  # counts match the release's rows
        assert sum(r[2] for r in synth if r[1] == col.concept_id) == synthetic[col.name].notna().sum()
    assert db["rows"]["visit_occurrence"] == len(synthetic) and db["rows"]["person"] == synthetic["id"].nunique()
    real_ids = {r[0] for r in query("SELECT person_id FROM {s}person", "src")}
    fake_ids = {r[0] for r in query("SELECT person_id FROM {s}person", "syn")}
    assert fake_ids == set(synthetic["id"]) and real_ids.isdisjoint(fake_ids) and len(real_ids) == 312
    visits = pd.DataFrame(query("SELECT person_id, visit_occurrence_id, visit_start_date FROM {s}visit_occurrence", "syn"))
    visits.columns = ["person", "visit", "date"]
    ordered = visits.assign(date=pd.to_datetime(visits["date"])).sort_values("visit", ascending=False)  # -1, -2, ...: row order
    assert ordered.groupby("person")["date"].apply(lambda d: d.is_monotonic_increasing).all()
    assert ordered.groupby("person")["date"].min().eq(pd.Timestamp("2000-01-01")).all()
    return manifest


@pytest.mark.slow
def test_omop_in_postgresql_to_a_synthetic_omop_schema_with_credentials_nowhere(tmp_path):
    with pg_database("hg_omop") as name:
        env = {
            "PGPASSWORD": SECRETS[0],  # libpq reads it itself (this server trusts, so any password will do)
            "HG_SOURCE_URL": pg_url(name, password=SECRETS[1]),
            "HG_TARGET_URL": pg_url(name, password=SECRETS[2]),
        }
        res, codes = run_pipeline(tmp_path, env)
        manifest = check_release(
            tmp_path, codes, res, lambda sql, s: pg_execute(name, sql.format(s={"src": "cdm.", "syn": "synth."}[s]))
        )
    assert (
        manifest["database"]["target"] == pg_url(name).replace("postgres@", "postgres:***@")
        and manifest["database"]["schema"] == "synth"
    )
    # the passwords are in no output, no file the runs wrote (MLflow's and Prefect's databases, releases, artifacts)
    for secret in SECRETS:
        assert secret not in res.stdout and secret not in res.stderr
        for path in (p for p in tmp_path.rglob("*") if p.is_file()):
            assert secret.encode() not in path.read_bytes(), f"{secret} in {path}"
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("healthgym-pbc").experiment_id])
    assert {r.data.tags["healthgym.kind"] for r in runs} >= {"train", "release"}
    for run in runs:
        shown = json.dumps([run.data.params, run.data.tags])
        assert not any(s in shown for s in SECRETS) and "HG_TARGET_URL" not in shown.replace("release.database", "")
    assert any(r.data.tags.get("release.database", "").endswith("schema synth") for r in runs)


@pytest.mark.slow
def test_the_embedded_default_runs_the_same_path_on_sqlite_files(tmp_path):
    res, codes = run_pipeline(tmp_path, {})

    def query(sql: str, which: str) -> list:
        with sqlite3.connect(tmp_path / ("cdm.db" if which == "src" else "synthetic.db")) as con:
            return con.execute(sql.format(s="")).fetchall()

    manifest = check_release(tmp_path, codes, res, query)
    assert manifest["database"]["target"] == "sqlite:///synthetic.db" and manifest["database"]["schema"] is None
    # training and the release read the extract through the SQL source file, and it is their recorded extract
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    run = client.get_run(manifest["training_run_id"])
    assert run.data.tags["healthgym.extract_path"] == str(tmp_path / "extract.source.yaml")
    assert run.data.tags["extract.fingerprint"] == manifest["extract_fingerprint"]


WATCH = """
import json, sqlite3, sys
from flows.cli import _embedded_defaults
_embedded_defaults()
from flows import serve
calls = []
def train(data, schema, config=None, **_):  # the retraining, stubbed: it records what it was asked to train on
    calls.append(data)
    return {"run_id": f"run-{len(calls)}", "model_uri": "models:/pbc/1", "promoted": True}
serve.train_flow = train
source, schema = sys.argv[1:]
from flows.cli import main
submitted = main(["submit", source, "--schema", schema, "--inbox", "inbox"])  # announced once, then watched
ticks = [len(serve.watch_inbox(inbox="inbox", schema=schema, sources=[source])) for _ in range(2)]
with sqlite3.connect("warehouse.db") as con:
    con.execute("INSERT INTO visits (id, day, bili) VALUES (9999, 0, 1.0)")
ticks += [len(serve.watch_inbox(inbox="inbox", schema=schema, sources=[source])) for _ in range(2)]
print("RESULT " + json.dumps({"submitted": submitted, "ticks": ticks, "calls": calls}))
"""


@pytest.mark.slow
def test_the_watcher_retrains_once_per_change_of_a_sql_source(tmp_path):
    with sqlite3.connect(tmp_path / "warehouse.db") as con:
        pd.read_csv(DEMO_DATA).to_sql("visits", con, index=False)
    (tmp_path / "pbc.source.yaml").write_text("url: sqlite:///warehouse.db\ntable: visits\n")
    res = run_script(WATCH, [str(tmp_path / "pbc.source.yaml"), str(DEMO_SCHEMA)], tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.split("RESULT ", 1)[1])
    assert out["submitted"] == 0 and out["ticks"] == [1, 0, 1, 0]  # the submission and the watched source: one result
    assert out["calls"] == [str(tmp_path / "pbc.source.yaml")] * 2
