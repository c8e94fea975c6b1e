"""Schedules: the nightly release from the champion, and retraining when a new extract lands
in the inbox folder (detected by SHA-256 fingerprint, so each file triggers once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from diffusion.errors import InputError
from flows.pipeline import STATE_DIR, release_flow, train_flow

EXTRACT_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def _seen_path(inbox: Path) -> Path:
    return STATE_DIR / "inbox" / (str(inbox.resolve()).strip("/").replace("/", "_") + ".json")


def new_extracts(inbox: str | Path) -> list[tuple[Path, str]]:
    """Files in the inbox whose fingerprint was never seen, marked as seen (each triggers once)."""
    from expectations.reading import fingerprint

    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    seen_file = _seen_path(inbox)
    seen: dict[str, str] = json.loads(seen_file.read_text()) if seen_file.exists() else {}
    fresh = []
    for path in sorted(p for p in inbox.iterdir() if p.is_file() and p.name.lower().endswith(EXTRACT_SUFFIXES)):
        try:
            fp = fingerprint(path)
        except InputError:
            continue
        if fp not in seen:
            seen[fp] = path.name
            fresh.append((path, fp))
    if fresh:
        seen_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = seen_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(seen, indent=1))
        tmp.replace(seen_file)
    return fresh


@flow(name="healthgym-watch-inbox", log_prints=True)
def watch_inbox(inbox: str, schema: str, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Retrain once per new extract; a failing extract fails its own run and changes nothing."""
    logger = get_run_logger()
    results = []
    for path, fp in new_extracts(inbox):
        logger.info("New extract %s (sha256 %s): retraining.", path.name, fp[:12])
        try:
            out = train_flow(data=str(path), schema=schema, config=config)
            results.append({"extract": path.name, "model_uri": out["model_uri"], "promoted": out["promoted"]})
        except Exception as exc:  # one bad extract must not stop the watcher
            logger.error("Retraining on %s failed: %s", path.name, exc)
            results.append({"extract": path.name, "error": str(exc)})
    return results


def serve(*, inbox: str, schema: str, name: str | None, cron: str, timezone: str) -> None:
    """Run the schedules in this process (Prefect's `serve`: no work pool or worker needed)."""
    from prefect import serve as prefect_serve
    from prefect.schedules import Cron

    from diffusion.schema import Schema

    sch = Schema.load(schema)
    Path(inbox).mkdir(parents=True, exist_ok=True)
    nightly = release_flow.to_deployment(
        name="nightly-release", schedule=Cron(cron, timezone=timezone), parameters={"schema_name": name or sch.name}
    )
    watcher = watch_inbox.to_deployment(
        name="retrain-on-new-extract", interval=60, parameters={"inbox": str(Path(inbox).resolve()), "schema": str(Path(schema).resolve())}
    )
    manual = train_flow.to_deployment(name="manual-train", parameters={"schema": str(Path(schema).resolve())})
    print(f"Serving: nightly release of {name or sch.name} at '{cron}' ({timezone}); watching {inbox}/ for new extracts every minute.")
    prefect_serve(nightly, watcher, manual)
