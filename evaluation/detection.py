"""Detection: can a classifier tell synthetic patients from real ones?

On `evaluation.data.patient_features` (one numeric row per patient, missing kept as NaN), with
the gradient boosting of `evaluation.boosting` (seeded, survives features missing in a fold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from diffusion.schema import Schema
from evaluation.boosting import classifier
from evaluation.data import align, patient_features


def discriminator_auc(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0, folds: int = 5) -> float:
    """Stratified k-fold cross-validated AUC of a gradient-boosting classifier telling real
    patients from synthetic ones (0.5 = indistinguishable, 1 = always told apart)."""
    fr, fs = align(patient_features(real, schema), patient_features(syn, schema))
    X = np.vstack([fr.to_numpy(float), fs.to_numpy(float)])
    y = np.r_[np.ones(len(fr)), np.zeros(len(fs))]
    folds = int(max(2, min(folds, len(fr), len(fs))))
    proba = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        proba[test] = classifier(X[train], y[train], seed).predict_proba(X[test])[:, 1]
    return float(roc_auc_score(y, proba))
