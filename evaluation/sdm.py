"""sdmetrics (0.32) measures: the Quality and Diagnostic reports and the DCR / disclosure privacy metrics.

The reports see the data as two related tables, the way SDV describes sequences:
``patients`` (primary key = patient code, the static columns) and ``visits`` (foreign key =
patient code, the time and the temporal columns). So Column Shapes and Column Pair Trends
cover both tables, Cardinality compares visits per patient, and Intertable Trends pairs static
with temporal columns. Column-pair thresholds are set to 0: every pair is scored, not only
those strongly correlated in the real data.

sdmetrics draws its subsamples from NumPy's global random state; every call here runs inside
`seeded`, which seeds it and restores it afterwards, so the numbers repeat.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Iterator

import numpy as np
import pandas as pd

from diffusion.data.schema import Column, Schema
from evaluation.data import PID, numeric_temporal, patient_static

log = logging.getLogger(__name__)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        np.random.set_state(state)


def _sdtype(col: Column) -> str:
    return "numerical" if col.numeric else "categorical"


def _as_sdv(frame: pd.DataFrame, cols: list[Column]) -> pd.DataFrame:
    out = frame.copy()
    for c in cols:
        if not c.numeric:
            out[c.name] = (
                out[c.name].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).astype(object)
            )
    return out


def _tables(df: pd.DataFrame, schema: Schema) -> dict[str, pd.DataFrame]:
    static = schema.static_columns
    patients = patient_static(df, schema).reset_index(names=PID) if static else pd.DataFrame({PID: np.unique(df[PID])})
    visits = df[[PID, schema.time, *[c.name for c in schema.temporal_columns]]]
    return {"patients": _as_sdv(patients, static), "visits": _as_sdv(visits, schema.temporal_columns)}


def metadata(schema: Schema) -> dict[str, Any]:
    patients = {PID: {"sdtype": "id"}} | {c.name: {"sdtype": _sdtype(c)} for c in schema.static_columns}
    visits = {PID: {"sdtype": "id"}, schema.time: {"sdtype": "numerical"}} | {
        c.name: {"sdtype": _sdtype(c)} for c in schema.temporal_columns
    }
    return {
        "tables": {"patients": {"primary_key": PID, "columns": patients}, "visits": {"columns": visits}},
        "relationships": [
            {"parent_table_name": "patients", "parent_primary_key": PID, "child_table_name": "visits", "child_foreign_key": PID}
        ],
    }


def _key(name: str) -> str:
    return name.lower().replace(" ", "_")


def reports(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0) -> dict[str, float]:
    """``fidelity.quality_score`` (QualityReport overall), ``fidelity.sdmetrics.<property>`` and
    ``fidelity.diagnostic_score`` / ``fidelity.diagnostic.<property>`` (DiagnosticReport)."""
    from sdmetrics.reports import DiagnosticReport, QualityReport

    rt, st, meta = _tables(real, schema), _tables(syn, schema), metadata(schema)
    out: dict[str, float] = {}
    with seeded(seed):
        quality = QualityReport()
        quality.real_correlation_threshold = 0.0
        quality.real_association_threshold = 0.0
        quality.generate(rt, st, meta, verbose=False)
        out["fidelity.quality_score"] = float(quality.get_score())
        for _, row in quality.get_properties().iterrows():
            if pd.notna(row["Score"]):
                out[f"fidelity.sdmetrics.{_key(row['Property'])}"] = float(row["Score"])
        diagnostic = DiagnosticReport()
        diagnostic.generate(rt, st, meta, verbose=False)
        out["fidelity.diagnostic_score"] = float(diagnostic.get_score())
        for _, row in diagnostic.get_properties().iterrows():
            if pd.notna(row["Score"]):
                out[f"fidelity.diagnostic.{_key(row['Property'])}"] = float(row["Score"])
    return out


# ---- privacy ----------------------------------------------------------------------------------------------
def patient_table(df: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A patient-level table for sdmetrics' single-table privacy metrics, and its metadata.

    Static columns, the number of visits, and per temporal number its mean over visits.
    """
    table = patient_static(df, schema).copy()
    table["n_visits"] = df.groupby(PID).size().reindex(table.index).astype(float)
    for c in numeric_temporal(schema):
        table[f"{c.name}_mean"] = df.groupby(PID)[c.name].mean().reindex(table.index)
    table = _as_sdv(table.reset_index(drop=True), schema.static_columns)
    cols = {c.name: {"sdtype": _sdtype(c)} for c in schema.static_columns}
    cols |= {k: {"sdtype": "numerical"} for k in table.columns if k not in cols}
    return table, {"columns": cols}


def privacy(
    real: pd.DataFrame,
    syn: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    *,
    seed: int = 0,
    rows: int = 500,
    sensitive: Column | None = None,
) -> dict[str, float]:
    """``privacy.sdmetrics.dcr_baseline_protection`` / ``dcr_overfitting_protection`` /
    ``disclosure_protection`` (1 = safest), on the patient table. Each is skipped (absent) if
    sdmetrics rejects the data; the reason is logged."""
    from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection, DisclosureProtection

    tr, meta = patient_table(real, schema)
    sy, _ = patient_table(syn, schema)
    ho, _ = patient_table(holdout, schema)
    # sdmetrics subsamples every table to the same size; that would drop training patients (and
    # hide copies of them), so subsample only when every table is larger than `rows`
    sub = rows if min(len(tr), len(sy), len(ho)) > rows else None
    out: dict[str, float] = {}
    with seeded(seed):
        # its random baseline table is drawn from default_rng(cls._seed): seed it, then put it back
        had, old = "_seed" in DCRBaselineProtection.__dict__, DCRBaselineProtection.__dict__.get("_seed")
        DCRBaselineProtection._seed = seed
        try:
            r = DCRBaselineProtection.compute_breakdown(
                tr, sy, meta, None, num_rows_subsample=rows if min(len(tr), len(sy)) > rows else None
            )
            out["privacy.sdmetrics.dcr_baseline_protection"] = float(r["score"])
        except Exception as exc:  # noqa: BLE001 - a third-party metric must not sink the evaluation
            log.warning("sdmetrics DCRBaselineProtection skipped: %s", type(exc).__name__)
        finally:
            if had:
                DCRBaselineProtection._seed = old
            else:
                del DCRBaselineProtection._seed
        try:
            r = DCROverfittingProtection.compute_breakdown(tr, sy, ho, meta, None, num_rows_subsample=sub)
            out["privacy.sdmetrics.dcr_overfitting_protection"] = float(r["score"])
        except Exception as exc:  # noqa: BLE001
            log.warning("sdmetrics DCROverfittingProtection skipped: %s", type(exc).__name__)
        if sensitive is not None and sensitive.static and not sensitive.numeric:
            known = [c for c in schema.static_columns if c.name != sensitive.name][:4]
            if known:
                try:
                    r = DisclosureProtection.compute_breakdown(
                        tr.dropna(subset=[c.name for c in known] + [sensitive.name]),
                        sy.dropna(subset=[c.name for c in known] + [sensitive.name]),
                        known_column_names=[c.name for c in known],
                        sensitive_column_names=[sensitive.name],
                        continuous_column_names=[c.name for c in known if c.numeric] or None,
                    )
                    out["privacy.sdmetrics.disclosure_protection"] = float(r["score"])
                except Exception as exc:  # noqa: BLE001
                    log.warning("sdmetrics DisclosureProtection skipped: %s", type(exc).__name__)
    return out
