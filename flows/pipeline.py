"""Prefect flows: they only wire tasks together."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

import flows  # noqa: F401 - its warning filter is set before the flows below are decorated
from diffusion.config import Config
from diffusion.data.schema import Schema
from diffusion.errors import InputError
from evaluation.core import check_config
from tasks import database, stages
from tasks.registry import link_release, register
from tasks.tracking import Run, resolve_model_dir

STATE_DIR = Path(".healthgym")


class GateError(RuntimeError):
    """Synthetic data that failed a release gate: no release is made."""


def _flow_run_id() -> str:
    try:
        return str(flow_run.get_id() or "")
    except Exception:
        return ""


def _parent_flow_run_id() -> str:
    try:
        return str(flow_run.get_parent_flow_run_id() or "")
    except Exception:
        return ""


def _workdir(kind: str) -> Path:
    (STATE_DIR / "work").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-", dir=STATE_DIR / "work"))


class ModelKeptError(RuntimeError):
    """A step after training failed; the trained model is kept in its MLflow run (`uri`)."""

    says_what_to_do = True  # the CLI prints the message as it is

    def __init__(self, step: str, exc: BaseException, run_id: str, uri: str, data: str, schema: str, release: bool):
        from evaluation.guard import reason

        self.step, self.run_id, self.uri = step, run_id, uri
        finish = f"healthgym train {data} --schema {schema} --from-model {uri}" + (" --release" if release else "")
        flow_run = _flow_run_id()
        super().__init__(
            f"{step} failed after training ({reason(exc)}). The trained model is kept in MLflow run {run_id} as "
            f"{uri}; finish from it (training is not repeated) with: {finish}"
            + (f"; or retry the Prefect flow run {flow_run}, which resumes after training." if flow_run else ".")
        )


def _kept_from(uri: str, fp: str) -> Run | None:
    """The training run a runs:/ URI names, continued, after checking it was trained on this extract."""
    if not uri.startswith("runs:/"):
        return None
    run_id = uri[len("runs:/") :].split("/")[0]
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        tags = MlflowClient().get_run(run_id).data.tags
    except MlflowException:
        raise InputError(f"--from-model {uri}: no MLflow run {run_id} in this tracking store.") from None
    if tags.get("extract.fingerprint") and tags["extract.fingerprint"] != fp:
        raise InputError(
            f"--from-model {uri} was trained on another extract (fingerprint {tags['extract.fingerprint'][:12]}, "
            f"this one {fp[:12]}); finish it with the extract it was trained on."
        )
    return Run.resume(run_id)


@flow(name="healthgym-train", log_prints=True)
def train_flow(
    data: str, schema: str, config: dict[str, Any] | None = None, release: bool = False, from_model: str | None = None
) -> dict[str, Any]:
    """validate -> split -> train -> keep -> calibrate -> sample -> evaluate -> register (-> release).

    The trained model is saved and logged to the run (`stages.keep_model`) before anything that
    can fail after training runs; a later failure raises `ModelKeptError`, which says how to
    finish. `from_model` (the kept folder's runs:/ URI, or a model folder) skips training; a
    retried flow run whose earlier attempt kept its model does the same."""
    sch, cfg, data_path = Schema.load(schema), Config.from_dict(config), str(Path(data).resolve())
    check_config(cfg.evaluation)  # before anything trains
    run = Run.start(f"healthgym-{sch.name}", run_name=f"train-{sch.name}", tags=_train_tags(data_path, schema))
    work = _workdir("train")
    at = _Step()
    try:
        _log_inputs(run, sch, cfg)
        df, fp = stages.read_extract(data_path)
        run.tags({"extract.fingerprint": fp})
        run.params({"extract.fingerprint": fp})
        stages.validate_extract(df, sch, run, work / "data_docs", schema, fp, data_path)
        train, holdout = stages.split(df, sch, cfg)
        run.params({"split.train_patients": train[sch.id].nunique(), "split.holdout_patients": holdout[sch.id].nunique()})
        ckpt = _checkpoints(sch, cfg, fp)
        run = _run_to_finish(run, from_model, fp)
        source = (data_path, str(Path(schema).resolve()), fp)  # what data-parallel processes read themselves
        model, history = _trained(
            at, from_model or run.tag(stages.KEPT_TAG), train, df[sch.id], sch, cfg, run, ckpt, source, work
        )
        at.name = "sampling"
        patients = cfg.sampling.patients or int(df[sch.id].nunique())
        synthetic = stages.sample(model, patients, cfg.pipeline.seed)
        at.name = "evaluation"
        report_dir = work / "report"
        evaluation = stages.evaluate(train, synthetic, model, holdout, history, report_dir, run)
        at.name = "registration"
        links = {"extract.fingerprint": fp, "training_run_id": run.id, "prefect.flow_run_id": _flow_run_id()}
        reg = register(
            at.folder, sch.name, run, evaluation.metrics, evaluation.passed, cfg.evaluation.primary_metric, links=links
        )
        out = _trained_outcome(run, reg, evaluation)
        if release:
            at.name = "release"
            out["release"] = _release_trained(synthetic, sch, evaluation, reg, run, cfg, patients, fp, model, report_dir)
        shutil.rmtree(ckpt, ignore_errors=True)  # finished: the next training starts fresh
        run.end("FINISHED")
        return out
    except BaseException as exc:
        run.end("FAILED")
        if at.kept and isinstance(exc, Exception) and not isinstance(exc, GateError):
            raise ModelKeptError(at.name, exc, run.id, at.kept, data, schema, release) from exc
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trained_outcome(run: Run, reg: dict[str, Any], evaluation) -> dict[str, Any]:
    """What `train_flow` returns (its release filled in when it makes one)."""
    return {
        "run_id": run.id,
        "model_uri": reg["uri"],
        "promoted": reg["promoted"],
        "decision": reg["decision"],
        "passed": evaluation.passed,
        "metrics": evaluation.metrics,
        "release": None,
        "privacy_note": evaluation.privacy_note(),
        "gates": evaluation.failed_gates_message(),
    }


def _log_inputs(run: Run, sch: Schema, cfg: Config) -> None:
    """The configuration as parameters; the schema and the configuration as JSON artifacts."""
    run.params(cfg.flat())
    run.json(sch.to_dict(), "schema.json")
    run.json(cfg.to_dict(), "config.json")


def _checkpoints(sch: Schema, cfg: Config, fp: str) -> Path:
    """The training's checkpoint folder, keyed by extract + config, so a killed run resumes where it stopped."""
    key = hashlib.sha256((fp + json.dumps(cfg.to_dict(), sort_keys=True)).encode()).hexdigest()[:16]
    return STATE_DIR / "checkpoints" / f"{sch.name}-{key}"


def _run_to_finish(run: Run, from_model: str | None, fp: str) -> Run:
    """The run this training finishes: the kept model's own run when `from_model` names one
    (the new run is then ended KILLED, its description and a tag naming the run that finishes), else `run`."""
    kept_run = _kept_from(from_model, fp) if from_model else None
    if kept_run is None:
        return run
    # an auditor reading the UI sees why this run stopped and where the work went on
    run.tags({"healthgym.finished_in": kept_run.id, "mlflow.note.content": f"Finished in the kept model's run {kept_run.id}."})
    run.end("KILLED")
    return kept_run


@dataclass
class _Step:
    """Where the train flow is (for the kept-model error), the kept model's URI and the folder to register."""

    name: str = "setup"
    kept: str | None = None
    folder: Path | None = None


def _train_tags(data_path: str, schema: str) -> dict[str, str]:
    tags = {
        "healthgym.kind": "train",
        "prefect.flow_run_id": _flow_run_id(),
        "prefect.parent_flow_run_id": _parent_flow_run_id(),
        "healthgym.extract_path": data_path,
        "healthgym.schema_path": str(Path(schema).resolve()),
    }
    return {k: v for k, v in tags.items() if v}


def _trained(at: _Step, kept: str | None, train, real_ids, sch: Schema, cfg: Config, run: Run, ckpt: Path, source, work: Path):
    """(the calibrated model, its loss history): the kept model when there is one, else trained and
    kept at once; calibrated (and kept again) when configured. `at` records the step and the folders."""
    at.kept = kept
    if kept:
        at.name = "loading the kept model"
        model = stages.load_kept(kept, work / "kept")
        history = model.meta.history
    else:
        at.name = "training"
        model, result = stages.train_model(train, sch, cfg, run, ckpt, real_ids, source)
        history = result.history
        at.name = "keeping the trained model"
        at.folder = work / "trained"
        at.kept = stages.keep_model(model, at.folder, run)
    at.name = "decoding calibration"
    if model.config.encoding.calibrate and model.meta.calibration is None:
        model = stages.calibrate(model, run)
        at.folder = work / "calibrated"
        stages.keep_model(model, at.folder, run)
    at.folder = at.folder or stages.save_model(model, work / "model")  # the kept folder is the one registered
    return model, history


def _release_trained(synthetic, sch: Schema, evaluation, reg, run: Run, cfg: Config, patients: int, fp: str, model, report_dir):
    """The training's own release: only when every gate passed; MLflow records it before it lands."""
    if not evaluation.passed:
        raise GateError(evaluation.failed_gates_message())
    manifest = {
        "model_uri": reg["uri"],
        "model_name": sch.name,
        "model_version": str(reg["version"]),
        "training_run_id": run.id,
        "seed": cfg.pipeline.seed,
        "patients": patients,
        "extract_fingerprint": fp,
        "gates_passed": evaluation.passed,
        "flow_run_id": _flow_run_id(),
        **stages.privacy_manifest(model),
    }

    def record(path: str) -> None:
        run.tags({"release.path": path, "release.run_id": run.id})
        link_release({"model_name": sch.name, "model_version": reg["version"]}, {"release.path": path})

    return stages.publish(synthetic, sch, manifest, report_dir, record)


@flow(name="healthgym-release", log_prints=True)
def release_flow(
    model: str | None = None,
    schema_name: str | None = None,
    patients: int | None = None,
    seed: int | None = None,
    where: str | None = None,
    to_db: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample from a model (the champion by default), evaluate against the real holdout, gate,
    publish. With `where`, a subgroup release: patients meeting the condition, judged against
    the real patients meeting it. With `to_db` (`expectations.database`), the release is also
    written into database tables (OMOP or one plain table), in one transaction."""
    from mlflow import MlflowClient

    if model is None:
        if not schema_name:
            raise InputError("Name the model: --model models:/NAME@champion (or a local model folder).")
        model = f"models:/{schema_name}@champion"
    work = _workdir("release")
    try:
        model_dir, info = resolve_model_dir(model, work / "download")
        from diffusion.bundle.folder import HealthGymModel

        hg = HealthGymModel.load(model_dir)
        sch, cfg = hg.schema, hg.config
        train_run = MlflowClient().get_run(info["run_id"]) if info.get("run_id") else None
        train_tags = train_run.data.tags if train_run else {}
        extract_path, expected_fp = _trained_extract(train_tags, model)
        dest = database.target(to_db, sch)  # a bad target fails before anything is sampled
        seed = int(seed if seed is not None else int(time.time()) % 2**31)
        run = Run.start(f"healthgym-{sch.name}", run_name=f"release-{sch.name}", tags=_release_tags(model, sch, info, train_tags))
        try:
            df, fp = _unchanged_extract(extract_path, expected_fp, model)
            run.tags({"extract.fingerprint": fp})
            train, holdout = stages.split(df, sch, cfg)
            if where:
                train, holdout = stages.subgroup(train, hg, where), stages.subgroup(holdout, hg, where)
            n = patients or cfg.sampling.patients or int(train[sch.id].nunique() + holdout[sch.id].nunique())
            synthetic = stages.sample(hg, n, seed, where)
            report_dir = work / "report"
            history = hg.meta.history  # saved with the model
            evaluation = stages.evaluate(train, synthetic, hg, holdout, history, report_dir, run)
            if not evaluation.passed:
                raise GateError(evaluation.failed_gates_message())
            manifest = _release_manifest(model, sch, info, run, seed, n, fp, where, hg)
            manifest, record = database.with_database(dest, synthetic, sch, manifest, _recorder(run, info), run)
            path = stages.publish(synthetic, sch, manifest, report_dir, record)
            run.end("FINISHED")
            out = {"release": path, "run_id": run.id, "model_uri": model, "metrics": evaluation.metrics}
            return {**out, "privacy_note": evaluation.privacy_note(), "database": manifest.get("database")}
        except BaseException:
            run.end("FAILED")
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trained_extract(train_tags: dict, model: str) -> tuple[str, str | None]:
    """(the extract the model was trained on, its fingerprint); InputError when it is not there."""
    extract_path = train_tags.get("healthgym.extract_path")
    if not extract_path or not Path(extract_path).exists():
        raise InputError(
            f"The extract model {model} was trained on is not available ({extract_path}); a release is "
            "evaluated against the real holdout patients, so it needs that extract."
        )
    return extract_path, train_tags.get("extract.fingerprint")


def _unchanged_extract(extract_path: str, expected_fp: str | None, model: str):
    """(the extract, its fingerprint); InputError when it changed since the model was trained."""
    df, fp = stages.read_extract(extract_path)
    if expected_fp and fp != expected_fp:
        raise InputError(
            f"The extract at {extract_path} changed since model {model} was trained "
            f"(fingerprint {fp[:12]} vs {expected_fp[:12]}); retrain before releasing."
        )
    return df, fp


def _recorder(run: Run, info: dict):
    """The publish callback: MLflow knows of the release before it appears."""

    def record(path: str) -> None:
        run.tags({"release.path": path})
        link_release(info, {"release.path": path, "release.run_id": run.id, "release.prefect_flow_run_id": _flow_run_id()})

    return record


def _release_tags(model: str, sch: Schema, info: dict, train_tags: dict) -> dict[str, str]:
    return {
        "healthgym.kind": "release",
        "prefect.flow_run_id": _flow_run_id(),
        "model.uri": model,
        "model.name": info.get("model_name", sch.name),
        "model.version": info.get("model_version", ""),
        "training_run_id": info.get("run_id", ""),
        "training.prefect_flow_run_id": train_tags.get("prefect.flow_run_id", ""),
        "healthgym.extract_path": train_tags.get("healthgym.extract_path"),
    }


def _release_manifest(model: str, sch: Schema, info: dict, run: Run, seed: int, n: int, fp: str, where: str | None, hg) -> dict:
    """What the release folder's manifest records: where the data came from, never a patient's value."""
    return {
        "model_uri": model,
        "model_name": info.get("model_name", sch.name),
        "model_version": str(info.get("model_version", "")),
        "training_run_id": info.get("run_id"),
        "release_run_id": run.id,
        "seed": seed,
        "patients": n,
        "extract_fingerprint": fp,
        "gates_passed": True,
        "flow_run_id": _flow_run_id(),
        "condition": where,
        **stages.privacy_manifest(hg),
    }
