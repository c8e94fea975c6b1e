"""`evaluate`: every measure, the real-vs-real floor, the gates, the figures and the report.

Metric names (all flat, JSON-able floats; a measure that cannot be computed is left out, and
`EvaluationResult.unmeasured` and metrics.json's ``not_measurable`` say why, `evaluation.guard`):

- ``fidelity.*``   marginals, correlations, sdmetrics Quality/Diagnostic reports (see
  `evaluation.fidelity` and `evaluation.sdm`)
- ``temporal.*``   lag-1 autocorrelations, label transitions, sequence lengths, visit gaps,
  trend/cycle (dynamic) correlations
- ``missing.*``    missing rates per nullable column
- ``validity.*``   static consistency, time order, values in bounds / categories
- ``discriminator_auc``  the strongest of a battery of real-vs-synthetic detectors, each member
  as ``discriminator_auc.<member>`` (0.5 = indistinguishable; `evaluation.detection`)
- ``utility.*``    TSTR vs TRTR on the schema's target (needs the holdout as test set)
- ``privacy.*``    distances to training vs holdout patients, membership inference, near and
  exact copies, each with its 95% interval; sdmetrics DCR and disclosure protection

`evaluation.catalog` says, for each, which question it answers, which way is better and how
it is gated.

With a holdout, every fidelity, temporal and discriminator measure compares the synthetic
patients with the holdout patients: real patients the model never saw, so a model that
memorised its training patients gains nothing there. The synthetic set is cut to the size of
the training set, and the same measures computed for the training patients in its place
against the same holdout are the real-vs-real floor (``calibration``): what a generator as
good as fresh real patients scores, noise included. Privacy measures compare the synthetic set
with the training patients and the holdout; their floor takes half the holdout in place of the
synthetic set against the other half.

Without a holdout, fidelity falls back to the training patients, utility and privacy are
skipped, `calibration` is empty, and the privacy gates are reported as "not evaluated"
(blocking while `GateConfig.require_holdout` is true).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from diffusion.config import ConfigError, EvaluationConfig
from diffusion.data.dates import numeric_schema, to_numbers
from diffusion.data.schema import Schema
from diffusion.data.split import split_patients
from diffusion.errors import InputError
from evaluation import detection, privacy, sdm, utility
from evaluation import figures as F
from evaluation import gates as G
from evaluation.catalog import measure
from evaluation.coverage import coverage
from evaluation.data import PID, n_patients, sample_patients, tidy
from evaluation.fidelity import correlations, marginals, missingness
from evaluation.gates import GateResult
from evaluation.guard import Unmeasured
from evaluation.guard import reason as guard_reason
from evaluation.temporal import dynamic_correlations, temporal
from evaluation.validity import validity

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    calibration: dict[str, float]
    gates: list[GateResult]
    passed: bool
    figures: dict[str, Path] = field(default_factory=dict)
    report_path: Path | None = None
    metrics_path: Path | None = None
    holdout_patients: int = 0
    seconds: float = 0.0  # wall time of the evaluation (kept out of `metrics` so they repeat exactly)
    unmeasured: dict[str, str] = field(default_factory=dict)  # measure family -> why it could not be computed
    floor_unmeasured: dict[str, str] = field(default_factory=dict)  # the same for the real-vs-real floor

    def failed_gates_message(self) -> str:
        """One paragraph naming each failing measure, its value and its threshold."""
        return G.failed_message(self.gates)

    def privacy_note(self) -> str:
        """One paragraph: DCR share and MIA AUC with their intervals, and what they can and cannot
        show at this holdout's size, against their gates' thresholds ("" without privacy measures)."""
        m = self.metrics
        if "privacy.dcr_share" not in m or "privacy.mia_auc" not in m:
            return ""
        limits = {g.name.removesuffix(".ci_low"): g.threshold for g in self.gates}
        target = min(limits.get("privacy.dcr_share", 0.5), limits.get("privacy.mia_auc", 0.5))
        parts = [
            f"{label} {m[k]:.3f} (95% interval {m[k + '.ci_low']:.3f}-{m[k + '.ci_high']:.3f})"
            for label, k in (("DCR share", "privacy.dcr_share"), ("membership-inference AUC", "privacy.mia_auc"))
        ]
        text = "Privacy against the holdout: " + ", ".join(parts) + " (0.5 for a generator that copies nothing)."
        above = [k for k in ("privacy.dcr_share", "privacy.mia_auc") if m[k] > target]
        if above and all(m[k + ".ci_low"] <= target for k in above):
            text += (
                f" The point estimate of {' and '.join(k.split('.')[1] for k in above)} is above {target:g}, but the "
                f"interval reaches below it: {self.holdout_patients} holdout patients cannot show whether the synthetic "
                "patients sit nearer the training patients than fresh ones would; a larger holdout "
                "(pipeline.min_holdout_patients) or cohort narrows the interval."
            )
        return text


def _finite(d: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if v is not None and math.isfinite(float(v))}


def check_config(cfg: EvaluationConfig) -> None:
    """ConfigError naming every evaluation setting out of its range, and a primary metric the catalog does not know."""
    problems = []
    if measure(cfg.primary_metric) is None:
        problems.append(f"evaluation.primary_metric {cfg.primary_metric!r} is not a measure of evaluation.catalog")
    if cfg.discriminator_folds < 2 or cfg.sequence_folds < 2:
        problems.append("evaluation.discriminator_folds and evaluation.sequence_folds must be at least 2")
    if cfg.sequence_steps < 1 or cfg.sequence_patients < 2:
        problems.append("evaluation.sequence_steps must be positive and evaluation.sequence_patients at least 2")
    if cfg.max_patients < 40:
        problems.append("evaluation.max_patients must be at least 40")
    if cfg.privacy_subsample < 2 or cfg.sdmetrics_privacy_rows < 2:
        problems.append("evaluation.privacy_subsample and evaluation.sdmetrics_privacy_rows must be at least 2")
    if cfg.trend_window < 2:
        problems.append("evaluation.trend_window must be at least 2")
    if cfg.coverage_band <= 1 or not 0 < cfg.coverage_min_share < 1:
        problems.append("evaluation.coverage_band must exceed 1 and evaluation.coverage_min_share lie in (0, 1)")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def fidelity(
    real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, cfg: EvaluationConfig, unmeasured: Unmeasured | None = None
) -> dict[str, float]:
    """Fidelity, temporal, missingness and discriminator measures of `syn` vs `real`; a family
    that cannot be computed is left out, its reason in `unmeasured`."""
    u = unmeasured if unmeasured is not None else Unmeasured()
    out: dict[str, float] = {}
    out.update(
        u.run(
            "fidelity.marginals",
            marginals,
            real,
            syn,
            schema,
            covers=("fidelity.marginal_score", "fidelity.ks_complement", "fidelity.tv_complement"),
        )
    )
    out.update(u.run("fidelity.correlations", correlations, real, syn, schema, covers=("fidelity.correlation_abs_diff",)))
    out.update(
        u.run(
            "temporal",
            temporal,
            real,
            syn,
            schema,
            covers=("temporal.lag1", "temporal.stay", "temporal.transition", "temporal.length", "temporal.gap"),
        )
    )
    out.update(u.run("missing", missingness, real, syn, schema))
    out.update(
        u.run(
            "temporal.dynamic",
            dynamic_correlations,
            real,
            syn,
            schema,
            cfg.trend_window,
            covers=("temporal.trend_corr_abs_diff", "temporal.cycle_corr_abs_diff"),
        )
    )
    out.update(
        u.run(
            "fidelity.sdmetrics",
            sdm.reports,
            real,
            syn,
            schema,
            seed=cfg.seed,
            covers=("fidelity.quality_score", "fidelity.diagnostic"),
        )
    )
    out.update(u.run("discriminator_auc", detection.battery, real, syn, schema, cfg))
    return out


def risk(
    real: pd.DataFrame,
    syn: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    cfg: EvaluationConfig,
    unmeasured: Unmeasured | None = None,
) -> dict[str, float]:
    """Privacy measures (distance-based and sdmetrics) of `syn`, with `holdout` as the unseen reference."""
    u = unmeasured if unmeasured is not None else Unmeasured()
    out = u.run(
        "privacy",
        privacy.privacy,
        real,
        syn,
        holdout,
        schema,
        seed=cfg.seed,
        subsample=cfg.privacy_subsample,
        covers=("privacy.dcr_share", "privacy.mia_auc", "privacy.near_copy_share", "privacy.exact_copy", "privacy.exact_copies"),
    )
    sensitive = utility.default_target(schema)
    out.update(
        u.run(
            "privacy.sdmetrics",
            sdm.privacy,
            real,
            syn,
            holdout,
            schema,
            seed=cfg.seed,
            rows=cfg.sdmetrics_privacy_rows,
            sensitive=sensitive,
        )
    )
    return out


def evaluate(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    schema: Schema,
    *,
    holdout: pd.DataFrame | None = None,
    config: EvaluationConfig | None = None,
    loss_history: list[dict] | None = None,
    out_dir: Path | None = None,
    provenance: dict[str, str] | None = None,
) -> EvaluationResult:
    """Judge `synthetic` against real patients the model never saw (`holdout`), beside the
    training patients `real` in its place (the floor), and for privacy against both.

    All three frames are in the extract's long format (see `evaluation.data.tidy`; patients
    longer than `schema.max_length` visits are cut). `holdout` holds real patients the model
    never saw: the fidelity yardstick, the utility test set and the privacy reference.
    Without it, utility and privacy measures are skipped and the gates that need them are
    reported as not evaluated (they block the release unless `gates.require_holdout` is
    false). `loss_history` ([{"step", "loss", "val_loss"}]) adds the loss-curve figure;
    `provenance` (e.g. the training's DP budget) is shown in the report and metrics.json.
    With `out_dir`, writes ``report.html`` (self-contained), ``metrics.json`` and
    ``figures/*.png`` there. Seeded by `config.seed`: the same inputs give the same metrics.
    """
    cfg = config or EvaluationConfig()
    check_config(cfg)
    started = time.monotonic()
    r, s, h = _tidied(real, synthetic, holdout, schema)
    unmeasured, floor_unmeasured = Unmeasured(), Unmeasured()
    metrics = unmeasured.run("validity", validity, s, schema, synthetic)  # every synthetic patient, in the frame's own row order
    every_real = [r] if h is None else [r, h]
    metrics.update(
        unmeasured.run("coverage", coverage, every_real, s, schema, band=cfg.coverage_band, min_share=cfg.coverage_min_share)
    )
    counts = _counts(r, s, h)
    # the distribution measures read at most max_patients patients of each set (seeded draws)
    r, s = sample_patients(r, cfg.max_patients, cfg.seed), sample_patients(s, cfg.max_patients, cfg.seed + 1)
    h = sample_patients(h, cfg.max_patients, cfg.seed + 2) if h is not None else None
    calibration = _measure(r, s, h, schema, cfg, metrics, unmeasured, floor_unmeasured)
    metrics, calibration = _finite(metrics), _finite(calibration)
    gate_results = G.check(metrics, cfg.gates, has_holdout=h is not None, floor=calibration, why=unmeasured.why)
    result = EvaluationResult(
        metrics=metrics,
        calibration=calibration,
        gates=gate_results,
        passed=all(g.passed for g in gate_results),
        holdout_patients=n_patients(h) if h is not None else 0,
        unmeasured=unmeasured.to_dict(),
        floor_unmeasured=floor_unmeasured.to_dict(),
    )
    if out_dir is not None:
        fig_dir = Path(out_dir) / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        result.figures = make_figures(r, s, h, schema, cfg, metrics, calibration, loss_history, fig_dir)
    result.seconds = time.monotonic() - started
    if out_dir is not None:
        _write(result, schema, cfg, Path(out_dir), counts, provenance)
    return result


def _counts(r: pd.DataFrame, s: pd.DataFrame, h: pd.DataFrame | None) -> dict[str, int]:
    """Patients and visits of each set, before any draw (the report's and metrics.json's counts)."""
    return {
        "real_patients": n_patients(r),
        "real_visits": len(r),
        "synthetic_patients": n_patients(s),
        "synthetic_visits": len(s),
        "holdout_patients": n_patients(h) if h is not None else 0,
        "holdout_visits": len(h) if h is not None else 0,
    }


def _tidied(real, synthetic, holdout, schema: Schema) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The three frames tidied (`evaluation.data.tidy`); a holdout under 2 patients is dropped (with a warning)."""
    r = tidy(real, schema, what="real data")
    s = tidy(synthetic, schema, what="synthetic data")
    h = tidy(holdout, schema, what="holdout data") if holdout is not None else None
    if h is not None and n_patients(h) < 2:
        log.warning("The holdout has fewer than 2 patients; privacy and utility are skipped.")
        h = None
    if n_patients(r) < 2 or n_patients(s) < 2:
        raise InputError("Evaluation needs at least 2 real training patients and 2 synthetic patients.")
    return r, s, h


def _measure(
    r, s, h, schema: Schema, cfg: EvaluationConfig, metrics: dict, unmeasured: Unmeasured, floor_unmeasured: Unmeasured
) -> dict:
    """Fidelity, utility and privacy of `s` into `metrics`; returns the real-vs-real floor of the same measures."""
    if h is None:
        metrics.update(fidelity(r, s, schema, cfg, unmeasured))
        return {}
    # synthetic and training patients judged against the same unseen patients, at the same size
    metrics.update(fidelity(h, sample_patients(s, n_patients(r), cfg.seed), schema, cfg, unmeasured))
    metrics.update(unmeasured.run("utility", utility.utility, r, s, h, schema, seed=cfg.seed))
    metrics.update(risk(r, s, h, schema, cfg, unmeasured))
    calibration = fidelity(h, r, schema, cfg, floor_unmeasured)
    if n_patients(h) >= 4:
        rest, half = split_patients(h, PID, 0.5, cfg.seed)
        calibration.update(risk(r, half, rest, schema, cfg, floor_unmeasured))
    return calibration


def _write(result: EvaluationResult, schema: Schema, cfg: EvaluationConfig, out_dir: Path, counts: dict, provenance) -> None:
    """metrics.json and report.html in `out_dir` (aggregates only)."""
    from evaluation.report import write_report

    result.metrics_path = out_dir / "metrics.json"
    result.metrics_path.write_text(
        json.dumps(
            {
                "schema": schema.name,
                "passed": result.passed,
                "counts": counts,
                "gates": [g.to_dict() for g in result.gates],
                "metrics": result.metrics,
                "calibration": result.calibration,
                "not_measurable": result.unmeasured,
                "floor_not_measurable": result.floor_unmeasured,
                "config": _plain(cfg),
                "seconds": round(result.seconds, 2),
                "provenance": provenance or {},
            },
            indent=2,
        )
    )
    result.report_path = write_report(result, schema, out_dir / "report.html", counts=counts, provenance=provenance)


def _plain(cfg: EvaluationConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def make_figures(
    r, s, h, schema: Schema, cfg: EvaluationConfig, metrics, calibration, loss_history, fig_dir: Path
) -> dict[str, Path]:
    """The report's figures; one that cannot be drawn on these data is logged and left out."""
    ref = h if h is not None else r  # the real patients the synthetic ones are judged against
    draw = {
        "marginals": lambda: F.marginals(ref, s, schema, fig_dir / "marginals.png"),
        "correlations": lambda: F.correlations(ref, s, schema, fig_dir / "correlations.png"),
        "trajectories": lambda: F.trajectories(ref, s, schema, fig_dir / "trajectories.png", cfg.example_patients, cfg.seed),
        "temporal": lambda: F.temporal(metrics, calibration, schema, fig_dir / "temporal.png"),
        "trend_cycle": lambda: F.trend_cycle(ref, s, schema, fig_dir / "trend_cycle.png", cfg.trend_window),
        "sequence_lengths": lambda: F.lengths_and_gaps(ref, s, schema, fig_dir / "sequence_lengths.png"),
        "coverage": lambda: F.coverage(metrics, cfg.coverage_band, fig_dir / "coverage.png"),
    }
    if h is not None:
        draw["privacy"] = lambda: F.privacy(privacy.distances(r, s, h, schema), fig_dir / "privacy.png")
    if loss_history:
        draw["loss_curve"] = lambda: F.loss_curve(loss_history, fig_dir / "loss_curve.png")
    figs: dict[str, Path] = {}
    for name, make in draw.items():
        try:
            path = make()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a figure is a view of measures already reported
            log.warning("Figure %s not drawn: %s.", name, guard_reason(exc))
            path = None
        if path is not None:
            figs[name] = path
    return figs


def read_frame(path) -> pd.DataFrame:
    """A .csv / .parquet extract (errors as one clear `InputError` paragraph)."""
    from expectations.reading import read_extract

    return read_extract(path)


def evaluate_files(
    real_path, synthetic_path, schema_path, out_dir, *, holdout_path=None, config: EvaluationConfig | None = None
) -> EvaluationResult:
    """`evaluate` on files: extracts as .csv/.parquet, the schema as YAML; writes the report to `out_dir`."""
    schema = Schema.load(schema_path)
    frames = [read_frame(p) if p else None for p in (real_path, synthetic_path, holdout_path)]
    real, synthetic, holdout = [to_numbers(f, schema) if f is not None else None for f in frames]  # dates as numbers
    return evaluate(real, synthetic, numeric_schema(schema), holdout=holdout, config=config, out_dir=Path(out_dir))
