"""Detection: can a classifier tell synthetic patients from real ones? A battery of detectors.

`battery` runs every member on the same two sets and reports each one's cross-validated AUC
(0.5 = indistinguishable, 1 = always told apart) and their maximum, ``discriminator_auc``: the
strongest detector decides, so a generator cannot pass by fooling the weakest. Members:

- ``discriminator_auc.features``: gradient boosting (`evaluation.boosting`) on the rich patient
  features of `evaluation.features` (quantiles, extremes, visit-to-visit changes, label runs);
- ``discriminator_auc.sequence``: a 1-D CNN over the visit sequences (`evaluation.sequence`), on
  at most `sequence_patients` patients a side (drawn seeded).

The evaluation computes the same battery for real-vs-real (the floor), member by member.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from diffusion.config import EvaluationConfig
from diffusion.data.schema import Schema
from evaluation.boosting import classifier
from evaluation.data import align, sample_patients
from evaluation.features import rich_features
from evaluation.sequence import sequence_auc

MEMBERS = ("features", "sequence")


def features_auc(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0, folds: int = 5) -> float:
    """Stratified k-fold AUC of gradient boosting on rich patient features (tidy frames)."""
    fr, fs = align(rich_features(real, schema), rich_features(syn, schema))
    X = np.vstack([fr.to_numpy(float), fs.to_numpy(float)])
    y = np.r_[np.ones(len(fr)), np.zeros(len(fs))]
    folds = int(max(2, min(folds, len(fr), len(fs))))
    proba = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        proba[test] = classifier(X[train], y[train], seed).predict_proba(X[test])[:, 1]
    return float(roc_auc_score(y, proba))


def battery(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, cfg: EvaluationConfig) -> dict[str, float]:
    """Every member's AUC (``discriminator_auc.<member>``) and the strongest (``discriminator_auc``),
    with the settings of `cfg` (seed, folds, the sequence member's folds, steps and patients)."""
    out = {"discriminator_auc.features": features_auc(real, syn, schema, seed=cfg.seed, folds=cfg.discriminator_folds)}
    r, s = sample_patients(real, cfg.sequence_patients, cfg.seed), sample_patients(syn, cfg.sequence_patients, cfg.seed + 1)
    out["discriminator_auc.sequence"] = sequence_auc(
        r, s, schema, seed=cfg.seed, folds=cfg.sequence_folds, steps=cfg.sequence_steps
    )
    out["discriminator_auc"] = max(out.values())
    return out


def discriminator_auc(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0, folds: int = 5) -> float:
    """The battery's strongest AUC with the evaluation's default settings otherwise (tidy frames)."""
    return battery(real, syn, schema, EvaluationConfig(seed=seed, discriminator_folds=folds))["discriminator_auc"]
