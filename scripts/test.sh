#!/usr/bin/env bash
# Set up (if needed) and run the test suite on three processes (pytest-xdist, a test file per
# process at a time; HEALTHGYM_TEST_WORKERS=0 runs it in one): three on two cores, since much of
# the suite waits on the servers and commands it starts. The suite leaves out the tests marked
# slow (end-to-end runs of the CLI, the production stack, drawn cohort shapes and fuzzed extracts),
# so it stays well under fifteen minutes; `--slow` runs exactly those, and CI (.ci/run) runs both.
# The fifteen slowest tests are listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=false
WORKERS=${HEALTHGYM_TEST_WORKERS:-3}
MARK="not slow"
if [ "${1:-}" = "--slow" ]; then
    MARK="slow"
    shift
fi
# one torch thread per test process when several share the cores: oversubscribed OpenMP threads spin
[ "$WORKERS" = 0 ] || export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python -m pytest -q -n "$WORKERS" --dist loadfile --durations=15 -m "$MARK" "$@"
