"""MLflow: the tracking store, one run per flow, and the model registry (champion alias)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

CHAMPION = "champion"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or a SQLite store in the working folder (the embedded default)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    return uri


def ui_command() -> str:
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri} --port 5000"
    return f"open {uri} in a browser (MLFLOW_TRACKING_URI)"


def experiment_id(name: str) -> str:
    tracking_uri()
    exp = mlflow.get_experiment_by_name(name)
    return exp.experiment_id if exp else mlflow.create_experiment(name)


class Run:
    """One MLflow run addressed by id, so logging works from any thread or task."""

    def __init__(self, run_id: str):
        self.id = run_id
        self.client = MlflowClient()

    @classmethod
    def start(cls, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> "Run":
        """A new run; or, when `tags` name a Prefect flow run (`prefect.flow_run_id`) that already
        has a run of the same kind, that run continued: a retried flow run keeps one MLflow run
        (and so registers one model version), its attempts counted in `healthgym.attempts`."""
        tags = tags or {}
        exp = experiment_id(experiment)
        client = MlflowClient()
        flow_run, kind = tags.get("prefect.flow_run_id"), tags.get("healthgym.kind")
        if flow_run and kind:
            query = f"tags.`prefect.flow_run_id` = '{flow_run}' and tags.`healthgym.kind` = '{kind}'"
            earlier = client.search_runs([exp], filter_string=query, max_results=1)
            if earlier:
                run_id = earlier[0].info.run_id
                attempts = int(earlier[0].data.tags.get("healthgym.attempts", "1")) + 1
                client.update_run(run_id, status="RUNNING")
                client.set_tag(run_id, "healthgym.attempts", str(attempts))
                log.info("Flow run %s is retried: continuing MLflow run %s (attempt %d).", flow_run, run_id, attempts)
                return cls(run_id)
        run = client.create_run(exp, run_name=run_name, tags=tags)
        return cls(run.info.run_id)

    @classmethod
    def resume(cls, run_id: str) -> "Run":
        """An existing run continued (status RUNNING again), e.g. to finish a training from its kept model."""
        client = MlflowClient()
        client.update_run(run_id, status="RUNNING")
        return cls(run_id)

    def tag(self, name: str) -> str | None:
        """The run's tag `name`, or None."""
        return self.client.get_run(self.id).data.tags.get(name)

    def params(self, params: dict[str, Any]) -> None:
        for k, v in params.items():
            self.client.log_param(self.id, k, json.dumps(v) if isinstance(v, (list, dict)) else v)

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if value == value:  # skip NaN
                self.client.log_metric(self.id, k, value, step=step or 0)

    def tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.id, k, str(v))

    def json(self, obj: Any, name: str) -> None:
        folder, _, filename = name.rpartition("/")
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / filename
            p.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(self.id, str(p), folder or None)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.id, str(path), folder)
        else:
            self.client.log_artifact(self.id, str(path), folder)

    def dataset(self, name: str, digest: str, source: str, schema: dict[str, Any], profile: dict[str, Any], context: str) -> None:
        """Record an input dataset (the run page's Datasets): name, digest, source, schema and
        counts only, never a row."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name, digest, "local", source, json.dumps(schema), json.dumps(profile))
        self.client.log_inputs(self.id, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])])

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.id, status=status)

    @property
    def url_hint(self) -> str:
        run = self.client.get_run(self.id)
        return f"experiment {run.info.experiment_id}, run {self.id}"


def champion_version(name: str):
    """The registered version holding the champion alias, or None."""
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def resolve_model_dir(uri_or_path: str, dest: Path) -> tuple[Path, dict[str, Any]]:
    """A local Health Gym model folder for a models:/ or runs:/ URI, or a local folder."""
    p = Path(uri_or_path)
    if p.is_dir():
        return p, {"model_uri": str(p.resolve())}
    if not uri_or_path.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from diffusion.errors import InputError

        raise InputError(
            f"--model {uri_or_path!r} is neither a local model folder nor an MLflow URI (models:/NAME@champion, runs:/ID/model)."
        )
    tracking_uri()
    info: dict[str, Any] = {"model_uri": uri_or_path}
    if uri_or_path.startswith("models:/"):
        ref = uri_or_path[len("models:/") :]
        name, _, rest = ref.partition("@") if "@" in ref else ref.partition("/")
        client = MlflowClient()
        try:
            mv = client.get_model_version_by_alias(name, rest) if "@" in ref else client.get_model_version(name, rest)
        except MlflowException:
            from diffusion.errors import InputError

            raise InputError(
                f"No registered model version matches {uri_or_path} in the MLflow store {mlflow.get_tracking_uri()}."
            ) from None
        info.update({"model_name": name, "model_version": mv.version, "run_id": mv.run_id})
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri_or_path, dst_path=str(dest)))
    found = sorted(local.rglob("encoder.json"))  # the model folder travels as the pyfunc's artifact
    return (found[0].parent if found else local), info
