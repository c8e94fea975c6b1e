"""The release's database part: the target checked before sampling, the tables written in one
transaction while the release folder is staged, before it is moved into place."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from diffusion.data.schema import Schema
from expectations.database import DatabaseTarget, database_target
from tasks import task_logger
from tasks.tracking import Run


def target(spec: dict[str, Any] | None, schema: Schema) -> DatabaseTarget | None:
    """The checked target of `spec` (the release flow's `to_db`), or None."""
    return database_target(spec, schema) if spec else None


def with_database(
    dest: DatabaseTarget | None,
    synthetic: pd.DataFrame,
    schema: Schema,
    manifest: dict[str, Any],
    record: Callable[[str], None],
    run: Run,
) -> tuple[dict[str, Any], Callable[[str], None]]:
    """(the manifest naming the database tables, the publish callback that writes them): the
    tables and the MLflow record commit together, before the folder lands; a failure in either
    leaves neither tables nor folder."""
    if dest is None:
        return manifest, record
    frames = dest.frames(synthetic, schema.name)
    entry = dest.describe(frames)
    run.tags({"release.database": entry["target"] + (f" schema {entry['schema']}" if entry["schema"] else "")})

    def commit(path: str) -> None:
        rows = dest.write(frames, then=lambda: record(path))
        task_logger().info("Release written to %s: %s.", entry["target"], ", ".join(f"{t} {n} rows" for t, n in rows.items()))

    return {**manifest, "database": entry}, commit
