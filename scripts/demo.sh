#!/usr/bin/env bash
# Set up (if needed) and run the demo: the whole pipeline on the bundled PBC cohort.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/healthgym demo "$@"
