"""The table of measures: each headline measure's question, direction, meaning, gate and needs.

One table drives the release gates (`evaluation.gates`), the report's headline table and the
champion rule (`better`), so which way is better is declared once. A per-column measure
(``temporal.lag1_abs_diff.bili``) takes its family's entry (the longest listed prefix).

Gate kinds:
- ``absolute``: the value against the threshold;
- ``floor``: the value against the real-vs-real floor (training vs holdout patients) plus the
  threshold, for measures whose noise on a small holdout is larger than any fixed margin;
- ``evidence``: the lower end of the measure's 95% interval against the threshold, so a
  release is blocked on evidence of memorisation, not on noise.
An absolute gate with a negative threshold is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Question = Literal["fidelity", "temporal", "validity", "detection", "utility", "privacy"]
Better = Literal["lower", "higher", "half", "reference"]
GateKind = Literal["absolute", "floor", "evidence"]


@dataclass(frozen=True)
class Measure:
    name: str
    question: Question
    better: Better  # "half": 0.5 is ideal and above it is worse (privacy); "reference": no direction
    description: str
    gate: str | None = None  # the GateConfig field holding its threshold
    kind: GateKind = "absolute"
    needs_holdout: bool = False
    required: bool = False  # a gate that blocks when its measure could not be computed

    @property
    def direction(self) -> str:
        """The gate's rule: the value must be "<=" or ">=" its threshold."""
        return ">=" if self.better == "higher" else "<="


MEASURES: list[Measure] = [
    Measure(
        "validity.static_consistency",
        "validity",
        "higher",
        "synthetic patients with constant static columns",
        "min_static_consistency",
        required=True,
    ),
    Measure(
        "validity.time_order",
        "validity",
        "higher",
        "synthetic patients with strictly increasing times",
        "min_time_order",
        required=True,
    ),
    Measure("validity.in_bounds", "validity", "higher", "numeric values inside the declared bounds", "min_in_bounds"),
    Measure("validity.in_categories", "validity", "higher", "labels among the declared categories", "min_in_bounds"),
    Measure(
        "fidelity.quality_score",
        "fidelity",
        "higher",
        "sdmetrics quality score (patients + visits tables)",
        "min_quality_score",
        required=True,
    ),
    Measure("fidelity.marginal_score", "fidelity", "higher", "mean KS / TV complement over columns"),
    Measure("fidelity.ks_complement", "fidelity", "higher", "1 - Kolmogorov-Smirnov distance of a number's marginal"),
    Measure("fidelity.tv_complement", "fidelity", "higher", "1 - total variation distance of a label's marginal"),
    Measure("fidelity.correlation_abs_diff", "fidelity", "lower", "mean |difference| of Spearman correlations"),
    Measure(
        "temporal.lag1_abs_diff",
        "temporal",
        "lower",
        "mean |difference| of lag-1 autocorrelations",
        "max_lag1_abs_diff",
        kind="floor",
    ),
    Measure("temporal.lag1_rank_abs_diff", "temporal", "lower", "|difference| of rank lag-1 autocorrelations"),
    Measure("temporal.stay_prob_abs_diff", "temporal", "lower", "|difference| of how often labels stay put"),
    Measure("temporal.transition_tvd", "temporal", "lower", "mean total variation of label transitions"),
    Measure("temporal.trend_corr_abs_diff", "temporal", "lower", "trend correlations within patients, mean |difference|"),
    Measure("temporal.cycle_corr_abs_diff", "temporal", "lower", "cycle correlations within patients, mean |difference|"),
    Measure("temporal.length_tvd", "temporal", "lower", "visits per patient, total variation distance"),
    Measure("temporal.gap_ks", "temporal", "lower", "gaps between visits, KS statistic"),
    Measure(
        "missing.rate_abs_diff",
        "fidelity",
        "lower",
        "largest |difference| of missing rates",
        "max_missing_rate_diff",
        kind="floor",
    ),
    Measure(
        "coverage.outside",
        "fidelity",
        "lower",
        "how far the worst static subgroup's share ratio lies outside the coverage band, by its 95% interval",
        "max_coverage_outside",
    ),
    Measure("coverage.share_ratio", "fidelity", "reference", "synthetic share / real share of a static subgroup"),
    Measure("coverage.min_ratio", "fidelity", "reference", "the smallest subgroup share ratio"),
    Measure("coverage.max_ratio", "fidelity", "reference", "the largest subgroup share ratio"),
    Measure(
        "discriminator_auc",
        "detection",
        "lower",
        "strongest of the detector battery (boosted rich features, sequence CNN), cross-validated AUC",
        "max_discriminator_auc",
        required=True,
    ),
    Measure("discriminator_auc.features", "detection", "lower", "gradient boosting on rich patient features, AUC"),
    Measure("discriminator_auc.sequence", "detection", "lower", "1-D CNN over the visit sequences, AUC"),
    Measure(
        "utility.trtr",
        "utility",
        "reference",
        "target score, trained on real training patients, tested on holdout",
        needs_holdout=True,
    ),
    Measure("utility.tstr", "utility", "higher", "target score, trained on synthetic, tested on holdout", needs_holdout=True),
    Measure(
        "privacy.dcr_share",
        "privacy",
        "half",
        "share of synthetic patients closer to training than holdout",
        "max_dcr_share",
        kind="evidence",
        needs_holdout=True,
        required=True,
    ),
    Measure(
        "privacy.mia_auc",
        "privacy",
        "half",
        "membership-inference attack AUC",
        "max_mia_auc",
        kind="evidence",
        needs_holdout=True,
        required=True,
    ),
    Measure(
        "privacy.near_copy_share",
        "privacy",
        "lower",
        "share of synthetic patients nearer training than 95% of real ones",
        "max_near_copy_share",
        kind="evidence",
        needs_holdout=True,
        required=True,
    ),
    Measure(
        "privacy.exact_copy_excess",
        "privacy",
        "lower",
        "share of synthetic patients equal to a training patient, beyond the share of holdout patients that are",
        "max_exact_copy_excess",
        kind="evidence",
        needs_holdout=True,
        required=True,
    ),
    Measure(
        "privacy.exact_copies",
        "privacy",
        "lower",
        "synthetic patients equal to a training patient at recorded precision",
        "max_exact_copies",
        needs_holdout=True,
    ),
    Measure("privacy.sdmetrics", "privacy", "higher", "sdmetrics protection scores (1 = safest)", needs_holdout=True),
]

# the measures a person reads first: the report's headline table ...
HEADLINE = (
    "fidelity.quality_score",
    "fidelity.marginal_score",
    "fidelity.correlation_abs_diff",
    "temporal.lag1_abs_diff.mean",
    "temporal.transition_tvd.mean",
    "temporal.trend_corr_abs_diff",
    "temporal.cycle_corr_abs_diff",
    "temporal.length_tvd",
    "temporal.gap_ks",
    "missing.rate_abs_diff.max",
    "coverage.outside",
    "coverage.min_ratio",
    "coverage.max_ratio",
    "discriminator_auc",
    "discriminator_auc.features",
    "discriminator_auc.sequence",
    "utility.trtr.auc",
    "utility.tstr.auc",
    "utility.trtr.r2",
    "utility.tstr.r2",
    "privacy.dcr_share",
    "privacy.mia_auc",
    "privacy.near_copy_share",
    "privacy.exact_copy_excess",
    "privacy.exact_copies",
    "privacy.sdmetrics.dcr_overfitting_protection",
    "privacy.sdmetrics.dcr_baseline_protection",
    "privacy.sdmetrics.disclosure_protection",
)
# ... and the few that tag each registered model version and end the demo's summary line
KEY_MEASURES = (
    "discriminator_auc",
    "discriminator_auc.features",
    "discriminator_auc.sequence",
    "fidelity.quality_score",
    "privacy.dcr_share",
    "privacy.mia_auc",
    "privacy.near_copy_share",
)

_BY_NAME = {m.name: m for m in MEASURES}
GATED = [m for m in MEASURES if m.gate is not None]


def measure(name: str) -> Measure | None:
    """The table's entry for a metric name: its own, or its family's (the longest listed prefix)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        found = _BY_NAME.get(".".join(parts[:k]))
        if found is not None:
            return found
    return None


def gate_metric(m: Measure) -> str:
    """The metric a gate reads: the family's summary for per-column families, the interval's
    lower end for evidence gates."""
    if m.kind == "evidence":
        return f"{m.name}.ci_low"
    return {"temporal.lag1_abs_diff": "temporal.lag1_abs_diff.mean", "missing.rate_abs_diff": "missing.rate_abs_diff.max"}.get(
        m.name, m.name
    )


def better(candidate: float, incumbent: float, name: str) -> bool:
    """Whether `candidate` is strictly better than `incumbent` on the metric `name`."""
    m = measure(name)
    if m is None:
        raise ValueError(f"{name!r} is not a measure of the catalog (evaluation.catalog.MEASURES): no direction to compare by")
    how = m.better
    if how == "half":
        return abs(candidate - 0.5) < abs(incumbent - 0.5)
    return candidate > incumbent if how == "higher" else candidate < incumbent
