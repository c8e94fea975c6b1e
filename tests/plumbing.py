"""Settings the plumbing tests share: an untrained model cannot pass the fidelity gates, so the
tests that check wiring (not quality) open them, here once for every test module."""

from __future__ import annotations

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
