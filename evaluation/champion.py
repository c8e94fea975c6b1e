"""The champion rule: whether a newly trained model replaces the current champion.

A pure function of metrics, so it is tested without MLflow. A challenger is promoted when it
passes every release gate and beats the champion on the primary metric (which way is better
comes from the measure table, `evaluation.catalog`), or when there is no champion yet.
"""

from __future__ import annotations

from evaluation.catalog import better


def decide(value: float | None, passed: bool, primary: str, champion: tuple[str, float | None] | None) -> tuple[bool, str]:
    """(promoted, the decision in words) for a challenger scoring `value` on `primary`;
    `champion` is (its version, its value on `primary`) or None when there is none."""
    if not passed:
        return False, "not promoted: a release gate failed"
    if value is None:
        return False, f"not promoted: primary metric {primary} missing"
    if champion is None:
        return True, "promoted: first model that passes every gate"
    version, incumbent = champion
    if incumbent is None or better(value, incumbent, primary):
        return True, f"promoted: {primary} {value:.4f} beats champion v{version} ({incumbent})"
    return False, f"not promoted: {primary} {value:.4f} does not beat champion v{version} ({incumbent:.4f})"
