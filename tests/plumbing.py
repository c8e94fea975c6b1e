"""Settings the plumbing tests share: an untrained model cannot pass the fidelity gates, so the
tests that check wiring (not quality) open them, here once for every test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# every gate a briefly trained toy model would fail, opened (the validity gates stay as they are)
OPEN_GATES = {
    "evaluation.gates.max_discriminator_auc": "1.0",
    "evaluation.gates.min_quality_score": "0.0",
    "evaluation.gates.max_mia_auc": "1.0",
    "evaluation.gates.max_dcr_share": "1.0",
    "evaluation.gates.max_near_copy_share": "1.0",
    "evaluation.gates.max_lag1_abs_diff": "2.0",
    "evaluation.gates.max_missing_rate_diff": "1.0",
    "evaluation.gates.max_coverage_outside": "1000",
}


def flags(settings: dict[str, str]) -> list[str]:
    """`--set KEY=VALUE` for each setting, as the `healthgym` command takes them."""
    return [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]


def run_script(
    script: str,
    args: list[str],
    cwd: Path,
    *,
    timeout: int,
    drop: tuple[str, ...] = ("MLFLOW_", "PREFECT_HOME", "HEALTHGYM_"),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`python -c script *args` in `cwd`, in a fresh process: no environment variable starting with
    one of `drop` (so it runs on its own embedded defaults), the repository on PYTHONPATH, `env` added."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {}), "PYTHONPATH": str(ROOT), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"},
    )
