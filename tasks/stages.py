"""The pipeline's Prefect tasks. Each calls library code and logs to the MLflow run it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact

from diffusion.bundle.fit import fit
from diffusion.bundle.folder import HealthGymModel
from diffusion.bundle.release import write_release
from diffusion.config import Config
from diffusion.data.schema import Schema
from diffusion.data.split import split_patients
from diffusion.training.loop import TrainResult
from tasks import hg_task, prefect_artifact, retry_on_io, task_logger
from tasks.tracking import Run


@hg_task(name="read-extract", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def read_extract(path: str) -> tuple[pd.DataFrame, str]:
    """The extract (a file or a SQL source) and its SHA-256 fingerprint."""
    from expectations.reading import read_with_fingerprint

    df, fp = read_with_fingerprint(path)
    task_logger().info("Read extract: %d rows, %d columns, sha256 %s.", len(df), df.shape[1], fp[:12])
    return df, fp


@hg_task(name="validate-extract")
def validate_extract(
    df: pd.DataFrame,
    schema: Schema,
    run: Run | None,
    docs_dir: Path,
    schema_path: str | None = None,
    fingerprint: str | None = None,
    source: str | None = None,
):
    """Great Expectations on the extract; logs the result and the extract as the run's input
    dataset (digest, schema, counts; no rows); raises on failure (nothing downstream runs)."""
    from expectations.suite import load_extra_expectations
    from expectations.validate import validate_extract as validate

    extra = load_extra_expectations(Path(schema_path)) if schema_path else []
    report = validate(df, schema, docs_dir=docs_dir, extra_expectations=extra)
    logger = task_logger()
    for w in report.warnings:
        logger.warning(w)
    if run is not None:
        run.json(report.to_dict(), "validation/result.json")
        if report.docs_path is not None:
            run.artifact(Path(report.docs_path).parent, "validation/data_docs")
        profile = report.profile
        run.params({"extract.rows": profile.get("rows"), "extract.patients": profile.get("patients")})
        run.metrics({f"extract.missing_rate.{k}": v for k, v in (profile.get("missing_rates") or {}).items()})
        run.tags({"validation.success": report.success})
        if fingerprint:
            run.dataset(
                name=schema.name,
                digest=fingerprint[:32],  # MLflow's digest field is short; the full SHA-256 is in the profile
                source=source or "",
                schema={"id": schema.id, "time": schema.time, "columns": {c.name: c.type for c in schema.columns}},
                profile={"sha256": fingerprint, "rows": profile.get("rows"), "patients": profile.get("patients")},
                context="training",
            )
    if not report.success:
        logger.error("Validation failed: %d expectation(s).", len(report.failures))
        report.raise_for_failures()
    logger.info("Validation passed: %s.", report.summary)
    return report


@hg_task(name="split-patients")
def split(df: pd.DataFrame, schema: Schema, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, holdout = split_patients(
        df, schema.id, config.pipeline.holdout_fraction, config.pipeline.seed, config.pipeline.min_holdout_patients
    )
    task_logger().info("Split patients: %d train, %d holdout.", train[schema.id].nunique(), holdout[schema.id].nunique())
    return train, holdout


class _Progress:
    """The training's progress bar on the Prefect flow run page (a progress artifact)."""

    def __init__(self, max_steps: int):
        self.max_steps = max(int(max_steps), 1)
        self.id = prefect_artifact(
            create_progress_artifact,
            progress=0.0,
            key="training-progress",
            description=f"training steps (of at most {self.max_steps})",
        )

    def update(self, step: int, description: str | None = None) -> None:
        if self.id is not None:
            prefect_artifact(
                update_progress_artifact,
                artifact_id=self.id,
                progress=min(100.0, 100.0 * step / self.max_steps),
                description=description,
            )

    def done(self, steps: int, stopped_by: str) -> None:
        self.update(self.max_steps, f"{steps} steps, stopped by {stopped_by}")


@hg_task(name="train-model")
def train_model(
    train: pd.DataFrame,
    schema: Schema,
    config: Config,
    run: Run | None,
    workdir: Path,
    real_ids: pd.Series | None = None,
    source: tuple[str, str, str] | None = None,
) -> tuple[HealthGymModel, Any]:
    """Fit encoder + denoiser (decoding not yet calibrated: `calibrate`); training/validation losses
    stream to MLflow as they come.
    Synthetic ids will avoid `real_ids` (the whole extract's). With `train.processes` > 1 the
    fit runs data-parallel under torchrun (`flows.distributed`), whose processes read the
    extract themselves from `source` = (extract path, schema path, fingerprint); the losses
    reach MLflow when it ends."""
    logger = task_logger()
    progress = _Progress(config.train.max_steps)
    callback = _training_callback(logger, progress, run)
    if config.train.processes > 1:
        from tasks.torchrun import launch

        if source is None:
            raise ValueError("train.processes > 1 needs the extract's path, schema path and fingerprint")
        logger.info("Training data-parallel: %d processes (torchrun, %s).", config.train.processes, config.train.backend)
        model, result = launch(source[0], source[1], config, checkpoints=workdir, fingerprint=source[2])
        for entry in result.history:
            callback("eval", entry)
    else:
        model, result = fit(train, schema, config, workdir=workdir, callback=callback, real_ids=real_ids, calibrate=False)
    progress.done(result.steps, result.stopped_by)
    if run is not None:
        _log_training(run, model, result)
    return model, result


def _training_callback(logger, progress: "_Progress", run: Run | None) -> Callable[[str, dict[str, Any]], None]:
    """The training loop's callback: progress lines, and losses and memorisation shares as MLflow metrics."""

    def callback(event: str, payload: dict[str, Any]) -> None:
        if event in ("step", "eval"):
            progress.update(payload["step"])
        if event == "step":
            logger.info("step %d: loss %.4f", payload["step"], payload["loss"])
            if run is not None:
                run.metrics({"train.loss": payload["loss"]}, step=payload["step"])
        elif event == "eval":
            share = payload.get("train_dcr_share")
            logger.info(
                "check at step %d: validation loss %.4f%s",
                payload["step"],
                payload["val_loss"],
                "" if share is None else f", generated patients nearer training than validation {share:.3f} (0.5 fair)",
            )
            if run is not None:
                run.metrics({"train.val_loss": payload["val_loss"]}, step=payload["step"])
                if share is not None:
                    run.metrics({"train.dcr_share": share}, step=payload["step"])

    return callback


def _log_training(run: Run, model: HealthGymModel, result) -> None:
    """The training's summary as run metrics and tags; the value protection and the loss history as JSON."""
    run.metrics(
        {
            "train.steps": result.steps,
            "train.seconds": result.seconds,
            "train.best_val_loss": result.best_val_loss,
            "train.best_step": result.best_step,
            "train.planned_steps": result.planned_steps,
            "train.processes": result.processes,
            "train.resumed_from": result.resumed_from,
        }
    )
    if result.best_dcr_share is not None:
        run.metrics({"train.best_dcr_share": result.best_dcr_share})
    if result.dp_epsilon is not None:
        run.metrics(
            {
                "train.dp_epsilon_spent": result.dp_epsilon,
                "train.dp_delta": result.dp_delta,
                "train.dp_noise_multiplier": result.dp_noise_multiplier,
            }
        )
    run.tags(
        {"train.stopped_by": result.stopped_by, "train.device": result.device, "train.memorisation_admissible": result.admissible}
    )
    run.json(model.meta.protection or {}, "training/value_protection.json")
    run.json(result.history, "training/loss_history.json")


KEPT_TAG = "healthgym.model_folder"  # the run's tag naming its kept model folder (a runs:/ URI)
KEPT_PATH = "model_folder"  # where in the run's artifacts the folder is kept


@hg_task(name="save-model")
def save_model(model: HealthGymModel, folder: Path) -> Path:
    return model.save(folder)


@hg_task(name="keep-model", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def keep_model(model: HealthGymModel, folder: Path, run: Run) -> str:
    """Save the model folder and log it to the training run, so nothing that fails after
    training loses it; returns its URI (``runs:/<run id>/model_folder``), also the run's tag
    `KEPT_TAG`. Called again after calibration (with another `folder`), it replaces the kept files."""
    model.save(folder)
    run.artifact(folder, KEPT_PATH)
    uri = f"runs:/{run.id}/{KEPT_PATH}"
    run.tags({KEPT_TAG: uri})
    task_logger().info("Trained model kept in the MLflow run: %s", uri)
    return uri


@hg_task(name="load-kept-model")
def load_kept(uri: str, dest: Path) -> HealthGymModel:
    """The model folder kept by an earlier attempt (a runs:/ URI or a local folder)."""
    from tasks.tracking import resolve_model_dir

    folder, _ = resolve_model_dir(uri, dest)
    model = HealthGymModel.load(folder)
    task_logger().info("Continuing from the kept model %s (training is not repeated).", uri)
    return model


@hg_task(name="calibrate-decoding")
def calibrate(model: HealthGymModel, run: Run | None) -> HealthGymModel:
    """The decoding calibration (`diffusion.bundle.fit.calibrate_decoding`; a no-op when off or done), logged."""
    from diffusion.bundle.fit import calibrate_decoding

    calibrate_decoding(model)
    if run is not None and model.meta.calibration:  # thresholds, penalties and the aggregates they match
        run.json(model.meta.calibration, "training/decoding_calibration.json")
    return model


@hg_task(name="sample-patients")
def sample(model: HealthGymModel, patients: int, seed: int, where: str | None = None) -> pd.DataFrame:
    """`patients` synthetic patients; with `where`, only patients meeting it (`diffusion.bundle.conditional`)."""
    logger = task_logger()
    logger.info(
        "Sampling %d synthetic patients (%s, %d steps, seed %d)%s.",
        patients,
        model.config.sampling.method,
        model.config.sampling.steps,
        seed,
        f" meeting {where!r}" if where else "",
    )
    if where:
        from diffusion.bundle.conditional import sample_where

        out = sample_where(model, patients, where, seed=seed)
        logger.info("sampled %d/%d patients", patients, patients)
        return out
    return model.sample(patients, seed=seed, progress=lambda done, n: logger.info("sampled %d/%d patients", done, n))


@hg_task(name="select-subgroup")
def subgroup(df: pd.DataFrame, model: HealthGymModel, where: str) -> pd.DataFrame:
    """The real patients meeting `where`: the yardstick of a conditional release."""
    from diffusion.bundle.conditional import select

    out = select(df, model, where)
    task_logger().info(
        "Real patients meeting the condition: %d of %d.", out[model.schema.id].nunique(), df[model.schema.id].nunique()
    )
    return out


def provenance(model: HealthGymModel) -> dict[str, str]:
    """What the report and the release manifest say of how the model was trained."""
    t = model.meta.training or TrainResult()
    out = {"training": f"{t.steps} steps, stopped by {t.stopped_by}, kept step {t.best_step}"}
    if t.best_dcr_share is not None:
        out["memorisation signal of the kept checkpoint"] = f"{t.best_dcr_share:.3f} (0.5 fair)"
    if t.dp_epsilon is not None:
        out["differential privacy (DP-SGD, network weights)"] = f"epsilon {t.dp_epsilon:.3f}, delta {t.dp_delta:.2g}"
    else:
        out["differential privacy"] = "none (train.dp is off)"
    if model.meta.protection:
        out["value protection"] = f"k = {model.meta.protection['k']}, rare labels: {model.meta.protection['rare_mode']}"
    return out


def privacy_manifest(model: HealthGymModel) -> dict[str, Any]:
    """The release manifest's privacy fields: the DP budget (null without DP) and the value protection."""
    t = model.meta.training or TrainResult()
    p = model.meta.protection or {}
    return {
        "dp_epsilon": t.dp_epsilon,
        "dp_delta": t.dp_delta,
        "value_protection": {"k": p.get("k"), "rare_labels": p.get("rare_mode")} if p else None,
        "synthetic_ids": model.id_scheme,
    }


@hg_task(name="evaluate-synthetic")
def evaluate(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    model: HealthGymModel,
    holdout: pd.DataFrame | None,
    history: list[dict] | None,
    out_dir: Path,
    run: Run | None,
):
    """Fidelity, privacy and utility report; metrics, report and figures go to MLflow.

    The real frames pass through the model's value protection first (`diffusion.privacy.protection`),
    so the report shows no single patient's extreme."""
    from evaluation import evaluate as run_evaluation

    schema, config = model.schema, model.config
    real, synthetic, holdout = model.judged(real, synthetic, holdout, seed=config.pipeline.seed)
    result = run_evaluation(
        real,
        synthetic,
        schema,
        holdout=holdout,
        config=config.evaluation,
        loss_history=history,
        out_dir=out_dir,
        provenance=provenance(model),
    )
    if run is not None:
        run.metrics(result.metrics)
        run.metrics({f"calibration.{k}": v for k, v in result.calibration.items()})
        run.tags({"evaluation.passed": result.passed})
        if result.unmeasured:  # the reasons are in evaluation/metrics.json and the report
            run.tags({"evaluation.not_measurable": ", ".join(sorted(result.unmeasured))})
        run.artifact(out_dir, "evaluation")
    rows = [
        {
            "measure": g.name,
            "value": round(float(g.value), 4) if g.value is not None else None,
            "threshold": g.threshold,
            "passed": g.passed,
        }
        for g in result.gates
    ]
    prefect_artifact(create_table_artifact, key="headline-metrics", table=rows, description="Release gates: value vs threshold")
    task_logger().info(
        "Evaluation %s: %s", "passed" if result.passed else "FAILED", "; ".join(f"{r['measure']}={r['value']}" for r in rows)
    )
    if result.privacy_note():
        task_logger().info(result.privacy_note())
    return result


@hg_task(name="publish-release", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io)
def publish(
    synthetic: pd.DataFrame,
    schema: Schema,
    manifest: dict[str, Any],
    report_dir: Path | None,
    record: Callable[[str], None] | None = None,
) -> str:
    """Write the release folder; `record(path)` (the MLflow links) runs before it is moved into
    place, so a tracking server that fails there leaves no release."""
    path = write_release(synthetic, name=schema.name, manifest=manifest, report_dir=report_dir, before_commit=record)
    task_logger().info("Release written: %s", path)
    prefect_artifact(
        create_markdown_artifact,
        key="release",
        markdown=f"# Release\n\n`{path}`\n\n- model: `{manifest.get('model_uri')}`\n"
        f"- patients: {manifest.get('patients')}\n- rows: {len(synthetic)}\n",
    )
    return path
