"""Release gates: each compares one measure of the measure table (`evaluation.catalog`) with a
threshold from `GateConfig` (or the real-vs-real floor plus it, or its 95% interval's lower end).

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
from typing import Callable

from diffusion.config import GateConfig
from evaluation.catalog import GATED, gate_metric


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


DESCRIPTIONS = {gate_metric(m): m.description for m in GATED}


def check(
    metrics: dict[str, float],
    config: GateConfig,
    *,
    has_holdout: bool,
    floor: dict[str, float] | None = None,
    why: Callable[[str], str | None] | None = None,
) -> list[GateResult]:
    """Every gate of the measure table (`evaluation.catalog`) against `metrics`; "floor" gates
    add the real-vs-real value from `floor` (0 when there is none) to their threshold. `why(name)`
    gives the reason a missing measure could not be computed (`evaluation.guard`); a gate whose
    measure failed blocks with it."""
    floor = floor or {}
    out = []
    for m in GATED:
        name = gate_metric(m)
        threshold = float(getattr(config, m.gate))
        if m.kind == "absolute" and threshold < 0:  # switched off
            continue
        note = ""
        if m.kind == "floor":
            base = floor.get(name)
            if base is not None and math.isfinite(base):
                threshold, note = threshold + base, f"real-vs-real floor {base:.3g} + {getattr(config, m.gate):g}"
        value = metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            failure = why(name) if why is not None else None
            if failure:
                out.append(
                    GateResult(name, None, threshold, False, m.direction, evaluated=False, note=f"not measurable: {failure}")
                )
                continue
            if m.needs_holdout and not has_holdout:
                blocks = config.require_holdout
                note = "needs real holdout patients; none given" + (" (blocks the release)" if blocks else "")
            elif m.required:
                blocks, note = True, "the measure could not be computed"
            else:
                blocks, note = False, "does not apply to this schema"
            out.append(GateResult(name, None, threshold, not blocks, m.direction, evaluated=False, note=note))
            continue
        if m.kind == "evidence":
            note = (
                f"point {metrics.get(m.name, float('nan')):.3g}, 95% interval "
                f"{value:.3g}-{metrics.get(m.name + '.ci_high', float('nan')):.3g}; blocks when the whole interval is above"
            )
        ok = value <= threshold if m.direction == "<=" else value >= threshold
        out.append(GateResult(name, float(value), threshold, bool(ok), m.direction, note=note))
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
    return (
        f"The synthetic data failed {len(failed)} of {len(gates)} release gate(s), so it must not be released: "
        + "; ".join(parts)
        + "."
    )
