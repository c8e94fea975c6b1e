"""Schedules: the nightly release from the champion, and retraining when a new extract arrives.

An extract arrives in one of two ways, and both end in the same inbox folder:
- a file dropped into the inbox (`inbox/*.csv`, `*.parquet`, ...);
- `healthgym submit DATA --schema S`, which leaves a small submission record
  (`inbox/<fingerprint>.submitted.json`: the file's absolute path, the schema, the SHA-256 and,
  when given, the resolved config of the retraining) and
  emits the Prefect event `healthgym.extract.arrived` (resource `healthgym.extract.<sha256>`).

The watcher flow (`watch_inbox`) reads the inbox, and a ledger of fingerprints already seen
(`.healthgym/inbox/*.json`, read and written under a file lock) makes each new fingerprint
retrain exactly once, whether the watcher runs on its one-minute schedule (`healthgym serve`,
embedded: events reach no trigger there) or is started by the event's trigger on a real Prefect
server (prefect.yaml). A submitted record is consumed when the watcher reads it; dropped files
stay where they are.

A SQL source file (`expectations.sql`: a database URL and a query) is an extract too. Dropped in
the inbox, or named by `healthgym serve --source FILE` (the watcher's `sources`), it is
re-fingerprinted on every tick (its query runs again): a changed result is a new fingerprint
and retrains once; an unchanged one never does.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger

import flows  # noqa: F401 - its warning filter is set before the flows below are decorated
from diffusion.errors import InputError
from flows.pipeline import STATE_DIR, release_flow, train_flow
from tasks import task_logger

EXTRACT_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".source.yaml", ".source.yml", ".sql.yaml", ".sql.yml")
SUBMISSION_SUFFIX = ".submitted.json"
EVENT = "healthgym.extract.arrived"


@dataclass
class Arrival:
    path: Path
    fingerprint: str
    schema: str | None = None  # a submission names its schema; a dropped file uses the watcher's
    source: str = "inbox"  # inbox | submit
    config: dict[str, Any] | None = None  # a submission's config; None: the watcher's


def _seen_path(inbox: Path) -> Path:
    return STATE_DIR / "inbox" / (str(inbox.resolve()).strip("/").replace("/", "_") + ".json")


@contextlib.contextmanager
def _ledger(inbox: Path) -> Iterator[dict[str, str]]:
    """The fingerprints already seen for this inbox, locked while in use and saved on exit."""
    seen_file = _seen_path(inbox)
    seen_file.parent.mkdir(parents=True, exist_ok=True)
    with open(seen_file.with_suffix(".lock"), "a+") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: one watcher at a time is the user's to keep
            pass
        seen: dict[str, str] = json.loads(seen_file.read_text()) if seen_file.exists() else {}
        before = dict(seen)
        yield seen
        if seen != before:
            tmp = seen_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(seen, indent=1))
            tmp.replace(seen_file)


def new_extracts(inbox: str | Path, sources: list[str] | tuple[str, ...] = ()) -> list[Arrival]:
    """Extracts in the inbox (dropped files and submission records) and the watched SQL `sources`
    whose fingerprint was never seen, marked as seen: each triggers once."""
    from expectations.reading import fingerprint
    from expectations.sql import is_source

    inbox = Path(inbox)
    if not inbox.is_dir() and not sources:
        return []
    fresh: list[Arrival] = []
    with _ledger(inbox) as seen:
        for record in sorted(inbox.glob(f"*{SUBMISSION_SUFFIX}")) if inbox.is_dir() else []:
            try:
                sub = json.loads(record.read_text())
                path = Path(sub["path"])
                fp = fingerprint(path) if sub["fingerprint"] not in seen else sub["fingerprint"]
            except (OSError, ValueError, KeyError, InputError) as exc:
                task_logger().error("Submission %s cannot be used (%s); it is dropped.", record.name, exc)
                record.unlink(missing_ok=True)
                continue
            if fp != sub["fingerprint"]:
                task_logger().warning(
                    "%s changed since it was submitted; training on its current content (sha256 %s).", path, fp[:12]
                )
                seen.setdefault(sub["fingerprint"], str(path))
            if fp not in seen:
                seen[fp] = str(path)
                fresh.append(Arrival(path, fp, sub.get("schema"), "submit", sub.get("config")))
            record.unlink(missing_ok=True)  # consumed: the ledger remembers the fingerprint
        dropped = sorted(p for p in inbox.glob("*") if p.is_file() and p.name.lower().endswith(EXTRACT_SUFFIXES))
        for path in dropped + [Path(s).resolve() for s in sources]:
            try:
                fp = fingerprint(path)
            except InputError as exc:  # a database that is down now is tried again on the next tick
                if is_source(path):
                    task_logger().error("SQL source %s cannot be read now (%s); tried again on the next tick.", path.name, exc)
                continue
            if fp not in seen:
                seen[fp] = path.name
                fresh.append(Arrival(path, fp))
    return fresh


def submit(data: str | Path, *, schema: str | Path, inbox: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Announce an extract: a submission record in the inbox (what `healthgym serve` reacts to)
    and the event `healthgym.extract.arrived` (what a deployment trigger on a server reacts to).
    `config` (a resolved Config as a dict) is the retraining's; None leaves it to the watcher."""
    from expectations.reading import fingerprint

    path = Path(data).resolve()
    if not path.is_file():
        raise InputError(f"The extract {data} does not exist (or is not a file).")
    if not path.name.lower().endswith(EXTRACT_SUFFIXES):
        raise InputError(
            f"The extract {data} must be a CSV or Parquet file or a SQL source file ({', '.join(EXTRACT_SUFFIXES)})."
        )
    fp = fingerprint(path)
    inbox = Path(inbox).resolve()
    inbox.mkdir(parents=True, exist_ok=True)
    record = {
        "path": str(path),
        "schema": str(Path(schema).resolve()),
        "fingerprint": fp,
        "submitted_utc": datetime.now(timezone.utc).isoformat(),
        **({"config": config} if config else {}),
    }
    with _ledger(inbox) as seen:
        already = fp in seen
        if not already:
            target = inbox / f"{fp}{SUBMISSION_SUFFIX}"
            tmp = inbox / f".{target.name}.partial"
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(target)
    event_id = _emit(fp, path, record, inbox)
    return {**record, "inbox": str(inbox), "already_seen": already, "event_id": event_id}


def _emit(fp: str, path: Path, record: dict[str, Any], inbox: Path) -> str | None:
    """Emit the event and wait until it is sent; its id, or None when events are switched off."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    event = emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"healthgym.extract.{fp}", "prefect.resource.name": path.name},
        payload={"path": record["path"], "schema": record["schema"], "fingerprint": fp, "inbox": str(inbox)},
    )
    EventsWorker.drain_all(timeout=30)
    return str(event.id) if event is not None else None


@flow(name="healthgym-watch-inbox", log_prints=True)
def watch_inbox(
    inbox: str, schema: str, config: dict[str, Any] | None = None, sources: list[str] | None = None
) -> list[dict[str, Any]]:
    """Retrain once per new extract (and per new result of each SQL source in `sources`); a
    failing extract fails its own run and changes nothing."""
    logger = get_run_logger()
    results = []
    for arrival in new_extracts(inbox, sources or ()):
        logger.info("New extract %s (%s, sha256 %s): retraining.", arrival.path.name, arrival.source, arrival.fingerprint[:12])
        try:
            out = train_flow(data=str(arrival.path), schema=arrival.schema or schema, config=arrival.config or config)
            results.append(
                {
                    "extract": arrival.path.name,
                    "fingerprint": arrival.fingerprint,
                    "run_id": out["run_id"],
                    "model_uri": out["model_uri"],
                    "promoted": out["promoted"],
                }
            )
        except Exception as exc:  # one bad extract must not stop the watcher
            logger.error("Retraining on %s failed: %s", arrival.path.name, exc)
            results.append({"extract": arrival.path.name, "fingerprint": arrival.fingerprint, "error": str(exc)})
    return results


def serve(*, inbox: str, schema: str, name: str | None, cron: str, timezone: str, sources: list[str] | None = None) -> None:
    """Run the schedules in this process (Prefect's `serve`: no work pool or worker needed)."""
    from prefect import serve as prefect_serve
    from prefect.schedules import Cron

    from diffusion.data.schema import Schema
    from expectations.sql import load_source

    sch = Schema.load(schema)
    for source in sources or ():
        load_source(source)  # a bad source file is the user's to see now, not the watcher's each minute
    Path(inbox).mkdir(parents=True, exist_ok=True)
    nightly = release_flow.to_deployment(
        name="nightly-release", schedule=Cron(cron, timezone=timezone), parameters={"schema_name": name or sch.name}
    )
    watcher = watch_inbox.to_deployment(
        name="retrain-on-new-extract",
        interval=60,
        parameters={
            "inbox": str(Path(inbox).resolve()),
            "schema": str(Path(schema).resolve()),
            **({"sources": [str(Path(s).resolve()) for s in sources]} if sources else {}),
        },
    )
    manual = train_flow.to_deployment(name="manual-train", parameters={"schema": str(Path(schema).resolve())})
    print(
        f"Serving: nightly release of {name or sch.name} at '{cron}' ({timezone}); watching {inbox}/ for new extracts "
        "and `healthgym submit` records every minute"
        + (f"; re-reading the SQL source(s) {', '.join(sources)} every minute." if sources else ".")
    )
    prefect_serve(nightly, watcher, manual)
