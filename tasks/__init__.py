"""Thin Prefect tasks: each calls the library and logs. None persists its result (results can
hold real patient rows, which must never be written to Prefect's storage)."""

import logging
from functools import partial
from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

# Every task of the pipeline: no result persistence, no caching (a training never re-runs
# silently from a cache, and no real rows are pickled under PREFECT_HOME).
hg_task = partial(task, persist_result=False, cache_policy=NO_CACHE)


def retry_on_io(task, task_run, state) -> bool:
    """Retry condition: only I/O failures (not bad input, not bugs) are retried."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def in_prefect_run() -> bool:
    """Whether a Prefect flow or task run is active (tasks are also called as plain functions)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def prefect_artifact(create: Callable[..., Any], **kwargs: Any) -> Any:
    """Create a Prefect artifact (`create_*_artifact`) inside a run; outside one, nothing. A failure
    is logged with its reason, never raised: the artifact is a view of what MLflow already holds."""
    if not in_prefect_run():
        return None
    try:
        return create(**kwargs)
    except Exception as exc:
        logging.getLogger("healthgym").warning(
            "Prefect artifact %r not written: %s: %s", kwargs.get("key", create.__name__), type(exc).__name__, exc
        )
        return None


def task_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow; the `healthgym` logger outside one (tests call tasks via .fn)."""
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("healthgym")
