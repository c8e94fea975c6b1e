"""Release gates: each compares one measure with a threshold from `GateConfig`.

A gate is *evaluated* when its measure could be computed. A gate that could not be (a privacy
measure without a holdout, a lag-1 gate for a schema without temporal numbers, a measure that
failed) is reported with ``evaluated=False`` and ``value=None``:

- a gate that needs the holdout and has none blocks the release while
  ``GateConfig.require_holdout`` is true (the default): privacy was not shown, so no release;
- a gate whose measure does not apply to the schema (nothing to measure) does not block.

Nothing passes silently: the report and `EvaluationResult.failed_gates_message` name every
gate that failed or was not evaluated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from diffusion.config import GateConfig


@dataclass
class GateResult:
    name: str  # the metric it reads
    value: float | None
    threshold: float
    passed: bool
    direction: str  # "<=" or ">=": the value must be <= / >= the threshold
    evaluated: bool = True
    note: str = ""

    @property
    def status(self) -> str:
        if not self.evaluated:
            return "not evaluated (blocks)" if not self.passed else "not evaluated"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return asdict(self) | {"status": self.status}


# (metric, direction, GateConfig field, needs the holdout, plain words)
GATES: list[tuple[str, str, str, bool, str]] = [
    ("validity.static_consistency", ">=", "min_static_consistency", False, "synthetic patients with constant static columns"),
    ("validity.time_order", ">=", "min_time_order", False, "synthetic patients with strictly increasing times"),
    ("validity.in_bounds", ">=", "min_in_bounds", False, "numeric values inside the declared bounds"),
    ("validity.in_categories", ">=", "min_in_bounds", False, "labels among the declared categories"),
    ("fidelity.quality_score", ">=", "min_quality_score", False, "sdmetrics quality score"),
    ("temporal.lag1_abs_diff.mean", "<=", "max_lag1_abs_diff", False, "lag-1 autocorrelation difference"),
    ("missing.rate_abs_diff.max", "<=", "max_missing_rate_diff", False, "missing-rate difference"),
    ("discriminator_auc", "<=", "max_discriminator_auc", False, "real-vs-synthetic classifier AUC"),
    ("privacy.dcr_share", "<=", "max_dcr_share", True, "share of synthetic patients closer to training than holdout"),
    ("privacy.mia_auc", "<=", "max_mia_auc", True, "membership-inference AUC"),
    ("privacy.exact_copies", "<=", "max_exact_copies", True, "exact copies of training patients"),
]

DESCRIPTIONS = {name: words for name, _, _, _, words in GATES}


def check(metrics: dict[str, float], config: GateConfig, *, has_holdout: bool) -> list[GateResult]:
    out = []
    for name, direction, field, needs_holdout, _ in GATES:
        threshold = float(getattr(config, field))
        value = metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if needs_holdout and not has_holdout:
                blocks = config.require_holdout
                note = "needs real holdout patients; none given" + (" (blocks the release)" if blocks else "")
            elif needs_holdout or name in ("discriminator_auc", "fidelity.quality_score", "validity.static_consistency",
                                           "validity.time_order"):
                blocks, note = True, "the measure could not be computed"
            else:
                blocks, note = False, "does not apply to this schema"
            out.append(GateResult(name, None, threshold, not blocks, direction, evaluated=False, note=note))
            continue
        ok = value <= threshold if direction == "<=" else value >= threshold
        out.append(GateResult(name, float(value), threshold, bool(ok), direction))
    return out


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4g}"


def failed_message(gates: list[GateResult]) -> str:
    """One paragraph naming each failing (or blocking, unevaluated) gate: value vs threshold."""
    failed = [g for g in gates if not g.passed]
    if not failed:
        return "Every release gate passed."
    parts = []
    for g in failed:
        what = DESCRIPTIONS.get(g.name, g.name)
        if g.evaluated:
            parts.append(f"{g.name} ({what}) is {_fmt(g.value)} but must be {g.direction} {g.threshold:g}")
        else:
            parts.append(f"{g.name} ({what}) was not evaluated: {g.note}")
    return f"The synthetic data failed {len(failed)} of {len(gates)} release gate(s), so it must not be released: " + "; ".join(parts) + "."
