"""Detection: can a classifier tell synthetic patients from real ones?

On `evaluation.data.patient_features` (one numeric row per patient, missing kept as NaN, which
histogram gradient boosting handles natively). Seeded, on one OpenMP thread: the tables are
small, and OpenMP's busy-waiting threads slow down many-fold on a shared CI machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from diffusion.schema import Schema
from evaluation.data import align, patient_features


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


def discriminator_auc(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0, folds: int = 5) -> float:
    """Stratified k-fold cross-validated AUC of a gradient-boosting classifier telling real
    patients from synthetic ones (0.5 = indistinguishable, 1 = always told apart)."""
    fr, fs = align(patient_features(real, schema), patient_features(syn, schema))
    X = np.vstack([fr.to_numpy(float), fs.to_numpy(float)])
    y = np.r_[np.ones(len(fr)), np.zeros(len(fs))]
    folds = int(max(2, min(folds, len(fr), len(fs))))
    proba = np.zeros(len(y))
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
            proba[test] = _classifier(seed).fit(X[train], y[train]).predict_proba(X[test])[:, 1]
    return float(roc_auc_score(y, proba))
