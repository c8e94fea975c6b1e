"""Registering a trained model and deciding champion vs challenger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect.artifacts import create_markdown_artifact

from evaluation.catalog import KEY_MEASURES
from evaluation.champion import decide
from tasks import hg_task, prefect_artifact, retry_on_io, task_logger
from tasks.tracking import CHAMPION, Run, champion_version, tracking_uri

PIP_REQUIREMENTS = ["torch==2.13.0", "pandas==2.3.3", "numpy==2.4.6", "scipy", "pyyaml", "pyarrow"]
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")  # the pyfunc, logged from code


def signature():
    """A request: how many patients, and optionally a seed and a condition on static columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec
    from mlflow.types import Schema as MlflowSchema

    return ModelSignature(
        inputs=MlflowSchema(
            [ColSpec("long", "patients"), ColSpec("long", "seed", required=False), ColSpec("string", "where", required=False)]
        )
    )


@hg_task(name="register-model", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def register(
    model_dir: Path,
    name: str,
    run: Run,
    metrics: dict[str, float],
    passed: bool,
    primary: str,
    links: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Log the model (pyfunc + folder) to the run, register a version, promote if it earns it.

    `links` (extract fingerprint, training run, flow run ids) become tags of the model version.
    A run that already registered a version (an earlier attempt of a retried flow run) keeps
    that version: the tags and the champion decision are written again, no version is added."""
    tracking_uri()
    logger = task_logger()
    client = MlflowClient()
    query = f"name='{name}' and run_id='{run.id}'"
    versions = client.search_model_versions(query)
    if versions:
        logger.info("%s v%s was registered by an earlier attempt of this run; keeping it.", name, versions[0].version)
    else:
        _log_model(model_dir, name, run)
        versions = client.search_model_versions(query)
    mv = max(versions, key=lambda v: int(v.version))
    _tag_version(client, name, mv.version, metrics, passed, primary, links)
    promoted, decision = _champion_decision(client, name, mv, metrics.get(primary), passed, primary)
    run.tags({"model.name": name, "model.version": mv.version, "model.decision": decision, "model.promoted": promoted})
    logger.info("Registered %s v%s; %s.", name, mv.version, decision)
    value = metrics.get(primary)
    prefect_artifact(
        create_markdown_artifact,
        key="model-decision",
        markdown=f"# Model {name} v{mv.version}\n\n{decision}\n\n"
        f"- primary metric: `{primary}` = {value}\n- gates passed: {passed}\n- MLflow run: `{run.id}`\n",
    )
    return {
        "name": name,
        "version": mv.version,
        "uri": f"models:/{name}/{mv.version}",
        "promoted": promoted,
        "decision": decision,
    }


def _tag_version(client, name: str, version: str, metrics: dict, passed: bool, primary: str, links: dict | None) -> None:
    """The key measures, the gates' verdict, the primary metric and the links as tags of the version."""
    for k in (*KEY_MEASURES, primary):
        if k in metrics:
            client.set_model_version_tag(name, version, k, f"{metrics[k]:.4f}")
    client.set_model_version_tag(name, version, "gates_passed", str(passed))
    client.set_model_version_tag(name, version, "primary_metric", primary)
    for k, v in (links or {}).items():
        if v:
            client.set_model_version_tag(name, version, k, str(v))


def _champion_decision(client, name: str, mv, value: float | None, passed: bool, primary: str) -> tuple[bool, str]:
    """(promoted, decision): the version becomes champion when it passed and beats the incumbent."""
    current = champion_version(name)
    incumbent = None if current is None else (current.version, client.get_run(current.run_id).data.metrics.get(primary))
    promoted, decision = decide(value, passed, primary, incumbent)
    if current is not None and current.version == mv.version:  # an earlier attempt promoted it
        promoted, decision = True, mv.tags.get("decision") or decision
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    client.set_model_version_tag(name, mv.version, "decision", decision)
    return promoted, decision


def _log_model(model_dir: Path, name: str, run: Run) -> None:
    """The pyfunc logged to `run` and registered under `name`."""
    import diffusion

    with mlflow.start_run(run_id=run.id):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(diffusion.__file__).parent)],  # the library travels with the model
            pip_requirements=PIP_REQUIREMENTS,
            signature=signature(),
            input_example=pd.DataFrame({"patients": [2], "seed": [0]}),  # a request, never a patient
            registered_model_name=name,
        )


def link_release(info: dict[str, Any], tags: dict[str, str]) -> None:
    """The training run (info["run_id"]) and the model version point at their latest release."""
    client = MlflowClient()
    if info.get("run_id"):
        for k, v in tags.items():
            client.set_tag(info["run_id"], k, v)
    if info.get("model_name") and info.get("model_version"):
        client.set_model_version_tag(info["model_name"], str(info["model_version"]), "release.path", tags["release.path"])
