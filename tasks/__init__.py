"""Thin Prefect tasks: each calls the library and logs. None persists its result (results can
hold real patient rows, which must never be written to Prefect's storage)."""

from functools import partial

from prefect import task
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
