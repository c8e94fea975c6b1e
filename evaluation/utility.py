"""Utility: does a model trained on synthetic patients predict real ones (TSTR beside TRTR)?

On `evaluation.data.patient_features`; the target is `default_target(schema)`; the models are
`evaluation.boosting`'s (seeded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

from diffusion.data.schema import Column, Schema
from evaluation.boosting import classifier, regressor
from evaluation.data import PID, align, patient_features


def default_target(schema: Schema) -> Column | None:
    """`schema.target`, else the last static binary/categorical column, else None (no utility test)."""
    if schema.target:
        return schema.column(schema.target)
    static = [c for c in schema.static_columns if c.type in ("binary", "categorical")]
    return static[-1] if static else None


def _xy(df: pd.DataFrame, schema: Schema, target: Column) -> tuple[pd.DataFrame, pd.Series]:
    X = patient_features(df, schema, exclude=(target.name,))
    g = df.groupby(PID, sort=True)[target.name]
    y = g.first() if target.static else g.last()  # a temporal target: its value at the last visit
    return X, y.reindex(X.index)


def _labels(y: pd.Series) -> pd.Series:
    return y.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def _auc(y_true: pd.Series, proba: pd.DataFrame, labels: list[str]) -> float:
    """Binary AUC, or macro one-vs-rest AUC over the labels present in the test set (> 2 classes)."""
    if len(labels) == 2:
        return float(roc_auc_score((y_true == labels[1]).astype(int), proba[labels[1]]))
    aucs = [roc_auc_score((y_true == lab).astype(int), proba[lab]) for lab in labels if 0 < (y_true == lab).sum() < len(y_true)]
    return float(np.mean(aucs)) if aucs else float("nan")


def utility(real: pd.DataFrame, syn: pd.DataFrame, test: pd.DataFrame, schema: Schema, *, seed: int = 0) -> dict[str, float]:
    """Train on synthetic / test on real (TSTR) beside train on real / test on real (TRTR).

    The target is `default_target(schema)`; the features are every other patient feature. A
    label target gives ``utility.{trtr,tstr}.auc`` (macro one-vs-rest for > 2 classes) and
    ``utility.auc_gap`` = TRTR - TSTR; a numeric one ``utility.{trtr,tstr}.{r2,mae}`` and
    ``utility.r2_gap``. Empty when there is no target or the test set has a single class.
    """
    target = default_target(schema)
    if target is None:
        return {}
    (Xr, yr), (Xs, ys), (Xt, yt) = _xy(real, schema, target), _xy(syn, schema, target), _xy(test, schema, target)
    Xr, Xs, Xt = align(Xr, Xs, Xt)
    out: dict[str, float] = {}
    if target.numeric:
        okt = yt.notna()
        if okt.sum() < 2:
            return {}
        for name, (X, y) in {"trtr": (Xr, yr), "tstr": (Xs, ys)}.items():
            ok = y.notna()
            model = regressor(X[ok].to_numpy(float), y[ok].to_numpy(float), seed)
            pred = model.predict(Xt[okt].to_numpy(float))
            out[f"utility.{name}.r2"] = float(r2_score(yt[okt], pred))
            out[f"utility.{name}.mae"] = float(mean_absolute_error(yt[okt], pred))
        out["utility.r2_gap"] = out["utility.trtr.r2"] - out["utility.tstr.r2"]
        return out
    yr, ys, yt = _labels(yr), _labels(ys), _labels(yt)
    labels = sorted(set(yr.dropna()) | set(yt.dropna()))
    okt = yt.notna()
    if len(labels) < 2 or yt[okt].nunique() < 2:
        return {}
    for name, (X, y) in {"trtr": (Xr, yr), "tstr": (Xs, ys)}.items():
        ok = y.notna()
        if y[ok].nunique() < 2:  # a single class learned: no better than chance
            out[f"utility.{name}.auc"] = 0.5
            continue
        model = classifier(X[ok].to_numpy(float), y[ok].to_numpy(str), seed)
        proba = pd.DataFrame(model.predict_proba(Xt[okt].to_numpy(float)), columns=model.classes_).reindex(
            columns=labels, fill_value=0.0
        )
        out[f"utility.{name}.auc"] = _auc(yt[okt].reset_index(drop=True), proba, labels)
    out["utility.auc_gap"] = out["utility.trtr.auc"] - out["utility.tstr.auc"]
    return out
