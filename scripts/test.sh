#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow tests included, on two processes
# (pytest-xdist, a test file per process at a time; HEALTHGYM_TEST_WORKERS=0 runs it in one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=90 PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=false
.venv/bin/python -m pytest -q -n "${HEALTHGYM_TEST_WORKERS:-2}" --dist loadfile "$@"
