"""The `healthgym` command line (../shared/CONTRACT.md section 3).

Exit codes: 0 done; 2 bad input (missing file, schema error, failed validation, bad flag);
1 anything else. Errors print as one paragraph; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config module is imported late, after the environment is set
    from diffusion.config import Config

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_DATA = DATA_DIR / "pbcseq.csv"
DEMO_SCHEMA = DATA_DIR / "pbc.yaml"
DEMO_CONFIG = DATA_DIR / "demo.yaml"


def _embedded_defaults() -> None:
    """Everything local unless the standard variables say otherwise (contract section 5)."""
    cwd = Path.cwd()
    os.environ.setdefault("PREFECT_HOME", str(cwd / ".healthgym" / "prefect"))
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{cwd / 'mlflow.db'}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _config(args) -> "Config":
    from diffusion.config import Config

    cfg = Config.load(args.config) if getattr(args, "config", None) else Config()
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "max_minutes", None) is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    return cfg.with_overrides(overrides) if overrides else cfg


def _need_file(path: str, what: str) -> None:
    from diffusion.errors import InputError

    if not Path(path).exists():
        raise InputError(f"The {what} {path} does not exist.")


# ---- commands ----------------------------------------------------------------------------------
def cmd_validate(args) -> int:
    from diffusion.data.schema import Schema
    from expectations.reading import read_with_fingerprint
    from expectations.suite import load_extra_expectations
    from expectations.validate import validate_extract

    schema = Schema.load(args.schema)
    df, fp = read_with_fingerprint(args.data)  # a SQL source's query runs once
    report = validate_extract(
        df, schema, docs_dir=Path(args.docs) if args.docs else None, extra_expectations=load_extra_expectations(Path(args.schema))
    )
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if report.docs_path:
        print(f"Data Docs: {report.docs_path}")
    report.raise_for_failures()
    profile = report.profile
    print(
        f"Extract passes validation: {profile.get('rows')} rows, {profile.get('patients')} patients, "
        f"sha256 {fp}; {report.summary}"
    )
    return 0


def cmd_train(args) -> int:
    from flows.pipeline import train_flow

    _need_file(args.data, "extract")
    _need_file(args.schema, "schema file")
    from diffusion.data.schema import Schema

    Schema.load(args.schema)  # fail fast, before Prefect starts
    cfg = _config(args)
    out = train_flow(
        data=args.data,
        schema=args.schema,
        config=cfg.to_dict(),
        release=bool(getattr(args, "release", False)),
        from_model=getattr(args, "from_model", None),
    )
    print(f"MLflow run: {out['run_id']}")
    print(f"Model {out['decision']}")
    if not out.get("passed", True) and out.get("gates"):
        print(_paragraph(out["gates"]))
    if out.get("privacy_note"):
        print(_paragraph(out["privacy_note"]))
    if out.get("release"):
        print(f"Release folder: {out['release']}")
    print(out["model_uri"])
    return 0


def cmd_demo(args) -> int:
    from flows.pipeline import train_flow
    from tasks.tracking import ui_command

    if not getattr(args, "config", None):
        args.config = str(DEMO_CONFIG)
    cfg = _config(args)
    g = cfg.evaluation.gates
    print(
        f"Health Gym demo: {DEMO_DATA.name} (bundled PBC cohort) with schema {DEMO_SCHEMA.name} and config {Path(args.config).name}; "
        f"training for at most {cfg.train.max_minutes:g} minutes. Gates (the defaults), against real holdout patients: "
        f"discriminator AUC <= {g.max_discriminator_auc:g}, mean lag-1 difference <= the real-vs-real floor + "
        f"{g.max_lag1_abs_diff:g}, DCR share and membership-inference AUC not above {g.max_dcr_share:g} by evidence "
        f"(95% interval), near copies <= {g.max_near_copy_share:g} by evidence.",
        flush=True,
    )
    out = train_flow(data=str(DEMO_DATA), schema=str(DEMO_SCHEMA), config=cfg.to_dict(), release=True)
    m = out["metrics"]
    headline = ", ".join(
        f"{k}={m[k]:.3f}" for k in ("discriminator_auc", "fidelity.quality_score", "privacy.dcr_share") if k in m
    )
    print(f"\nRelease folder: {out['release']}")
    print(f"MLflow run: {out['run_id']} (model {out['model_uri']}; {out['decision']})")
    if headline:
        print(f"Headline metrics: {headline}")
    if out.get("privacy_note"):
        print(_paragraph(out["privacy_note"]))
    print(f"Open the MLflow UI: {ui_command()}")
    return 0


def cmd_sample(args) -> int:
    import tempfile

    from diffusion.bundle.conditional import parse_boost, sample_boosted, sample_where
    from diffusion.bundle.folder import HealthGymModel
    from diffusion.errors import InputError
    from tasks.tracking import resolve_model_dir

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise InputError(f"--out {out} must end in .csv or .parquet.")
    if args.patients < 1:
        raise InputError(f"--patients must be at least 1, got {args.patients}.")
    if args.where and args.boost:
        raise InputError("Use --where or --boost, not both: a subgroup is either the whole sample or a boosted part of it.")
    boosts = dict(parse_boost(b) for b in args.boost or [])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, _ = resolve_model_dir(args.model or f"models:/{args.name}@champion", Path(tmp))
        model = HealthGymModel.load(model_dir)
        if args.where:
            df = sample_where(model, args.patients, args.where, seed=args.seed)
        elif boosts:
            df = sample_boosted(model, args.patients, boosts, seed=args.seed)
        else:
            from tqdm.auto import tqdm

            with tqdm(total=args.patients, desc="sample", unit="patient", file=sys.stderr) as bar:
                df = model.sample(args.patients, seed=args.seed, progress=lambda done, n: bar.update(done - bar.n))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if out.suffix.lower() == ".csv":
        df.to_csv(partial, index=False)
    else:
        df.to_parquet(partial, index=False)
    os.replace(partial, out)
    print(f"Wrote {len(df)} rows for {args.patients} synthetic patients to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from evaluation import evaluate_files

    for p, what in ((args.real, "real extract"), (args.synthetic, "synthetic file"), (args.schema, "schema file")):
        _need_file(p, what)
    if args.holdout:
        _need_file(args.holdout, "holdout extract")
    result = evaluate_files(
        args.real, args.synthetic, args.schema, Path(args.out), holdout_path=args.holdout, config=_config(args).evaluation
    )
    print(f"Report: {result.report_path}")
    print(f"Metrics: {result.metrics_path}")
    print("Gates: " + ("all passed" if result.passed else result.failed_gates_message()))
    return 0


def cmd_release(args) -> int:
    from flows.omop import release_target
    from flows.pipeline import release_flow

    to_db = release_target(args)
    out = release_flow(
        model=args.model, schema_name=args.name, patients=args.patients, seed=args.seed, where=args.where, to_db=to_db
    )
    print(f"Release folder: {out['release']}")
    if out.get("database"):
        db = out["database"]
        rows = ", ".join(f"{t} {n} rows" for t, n in db["rows"].items())
        print(f"Release in the database {db['target']}" + (f" schema {db['schema']}" if db["schema"] else "") + f": {rows}")
    print(f"MLflow run: {out['run_id']} (model {out['model_uri']})")
    if out.get("privacy_note"):
        print(_paragraph(out["privacy_note"]))
    return 0


def cmd_schema_infer(args) -> int:
    from diffusion.data.inference import infer_schema
    from expectations.reading import read_extract

    df = read_extract(args.data)
    schema = infer_schema(df, id_col=args.id, time_col=args.time, name=args.name or Path(args.data).name.split(".")[0])
    print("# Draft schema inferred from the extract: check types, bounds and categories before use.")
    print(schema.to_yaml(), end="")
    return 0


def cmd_submit(args) -> int:
    from diffusion.data.schema import Schema

    _need_file(args.data, "extract")
    _need_file(args.schema, "schema file")
    Schema.load(args.schema)  # a schema error is the submitter's to see, not the watcher's
    from flows.serve import EVENT, submit

    given = getattr(args, "config", None) or getattr(args, "set", None)
    out = submit(args.data, schema=args.schema, inbox=args.inbox, config=_config(args).to_dict() if given else None)
    if out["already_seen"]:
        print(f"Extract {out['path']} (sha256 {out['fingerprint']}) was seen before: no retraining.")
    else:
        print(
            f"Submitted {out['path']} (sha256 {out['fingerprint']}) with schema {out['schema']}: "
            f"record in {out['inbox']}; `healthgym serve` retrains on it once."
        )
    print(
        f"Event {EVENT} (resource healthgym.extract.{out['fingerprint']}): "
        + (f"emitted, id {out['event_id']}." if out["event_id"] else "not emitted (Prefect events are switched off).")
    )
    return 0


def cmd_serve(args) -> int:
    from flows.serve import serve

    serve(inbox=args.inbox, schema=args.schema, name=args.name, cron=args.cron, timezone=args.timezone, sources=args.source)
    return 0


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="healthgym", description="Synthetic longitudinal patient data with a diffusion model.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True)

    _pipeline_commands(sub)
    _model_commands(sub)
    _service_commands(sub)
    from flows.omop import omop_commands

    omop_commands(sub)
    return p


def _config_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", help="YAML/JSON config file (sections model, diffusion, train, sampling, evaluation, pipeline)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config value, e.g. diffusion.steps=200")


def _pipeline_commands(sub) -> None:
    """demo, validate, train."""
    d = sub.add_parser("demo", help="the whole pipeline on the bundled PBC cohort")
    _config_flags(d)
    d.add_argument("--max-minutes", type=float, default=None, help="training budget in minutes")
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser("validate", help="validate an extract against a schema")
    v.add_argument("data")
    v.add_argument("--schema", required=True)
    v.add_argument("--docs", help="folder for the Great Expectations Data Docs")
    v.set_defaults(func=cmd_validate)

    t = sub.add_parser("train", help="validate, train, sample, evaluate, log and register")
    t.add_argument("data")
    t.add_argument("--schema", required=True)
    _config_flags(t)
    t.add_argument("--max-minutes", type=float, default=None)
    t.add_argument("--release", action="store_true", help="also release the evaluated sample when it passes every gate")
    t.add_argument(
        "--from-model",
        default=None,
        metavar="URI",
        help="finish a training whose later step failed, from the model it kept (runs:/ID/model_folder): no retraining",
    )
    t.set_defaults(func=cmd_train)


def _model_commands(sub) -> None:
    """sample, evaluate, release."""
    s = sub.add_parser("sample", help="synthetic patients from a model")
    s.add_argument(
        "--model",
        default=None,
        help="models:/NAME@champion, runs:/ID/model or a model folder (default: models:/<--name>@champion)",
    )
    s.add_argument("--name", default="pbc", help="registered model name when --model is not given (default: pbc)")
    s.add_argument("--patients", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--where", help="only patients meeting this condition on static columns, e.g. \"sex == 'f' and age > 60\"")
    s.add_argument(
        "--boost",
        action="append",
        metavar="COLUMN=VALUE:FACTOR",
        help="sample the subgroup COLUMN == VALUE at FACTOR times its odds (repeatable)",
    )
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="fidelity and privacy report")
    e.add_argument("--real", required=True)
    e.add_argument("--synthetic", required=True)
    e.add_argument("--schema", required=True)
    e.add_argument("--holdout")
    e.add_argument("--out", required=True)
    _config_flags(e)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("release", help="one release, as the nightly schedule makes it")
    r.add_argument("--model", default=None, help="default: models:/<--name>@champion")
    r.add_argument("--name", default="pbc", help="registered model name when --model is not given (default: pbc)")
    r.add_argument("--patients", type=int, default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--where", default=None, help="a subgroup release: only patients meeting this condition on static columns")
    from flows.omop import database_flags

    database_flags(r)
    r.set_defaults(func=cmd_release)


def _service_commands(sub) -> None:
    """serve, submit, schema infer."""
    sv = sub.add_parser("serve", help="run the nightly release schedule and retraining on new extracts")
    sv.add_argument("--inbox", default="inbox", help="folder watched for new extracts")
    sv.add_argument("--schema", default=str(DEMO_SCHEMA))
    sv.add_argument("--name", default=None)
    sv.add_argument("--cron", default="0 2 * * *")
    sv.add_argument("--timezone", default="UTC")
    sv.add_argument(
        "--source", action="append", metavar="FILE", help="a SQL source file (.source.yaml) to re-read every minute (repeatable)"
    )
    sv.set_defaults(func=cmd_serve)

    sb = sub.add_parser("submit", help="announce a new extract: retrain on it once (serve's inbox, and a Prefect event)")
    sb.add_argument("data")
    sb.add_argument("--schema", default=str(DEMO_SCHEMA), help="schema of the extract (default: the bundled PBC schema)")
    sb.add_argument("--inbox", default="inbox", help="the inbox folder that `healthgym serve` watches (default: inbox)")
    _config_flags(sb)  # the retraining's config travels in the submission record (default: the watcher's)
    sb.set_defaults(func=cmd_submit)

    sc = sub.add_parser("schema", help="schema tools")
    scs = sc.add_subparsers(dest="schema_command", required=True)
    inf = scs.add_parser("infer", help="print a draft schema for an extract")
    inf.add_argument("data")
    inf.add_argument("--id", required=True)
    inf.add_argument("--time", required=True)
    inf.add_argument("--name", default=None)
    inf.set_defaults(func=cmd_schema_infer)


def _no_tracebacks_in_logs() -> None:
    """Without --debug, log records carry no traceback (Prefect logs one for every failed task)."""
    make = logging.getLogRecordFactory()

    def factory(name, level, fn, lno, msg, args, exc_info, func=None, sinfo=None, **kwargs):
        return make(name, level, fn, lno, msg, args, None, func, sinfo, **kwargs)

    logging.setLogRecordFactory(factory)


def _paragraph(text: str) -> str:
    # never break inside a flag or a URI: a user copies the command it prints
    return textwrap.fill(" ".join(str(text).split()), width=100, break_on_hyphens=False, break_long_words=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad flags: argparse prints usage and exits 2
    _embedded_defaults()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "alembic", "mlflow", "great_expectations", "urllib3", "prefect.server", "docket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.debug:
        _no_tracebacks_in_logs()
    from diffusion.errors import InputError

    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_paragraph(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            traceback.print_exc()
        if getattr(exc, "says_what_to_do", False):  # e.g. a failure after training: the message says how to finish
            print(f"error: {_paragraph(exc)}", file=sys.stderr)
        else:
            print(f"error: {_paragraph(f'{type(exc).__name__}: {exc}')} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
