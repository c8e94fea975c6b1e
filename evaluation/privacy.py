"""Distance-based privacy on standardised patient feature vectors, judged against a real holdout.

A generator that learned the population puts its synthetic patients as close to real patients
it never saw (the holdout) as to those it trained on; one that memorised puts them on top of
training patients. All distances are Euclidean on `patient_features`, median-imputed and
standardised with the training patients' statistics.

- ``privacy.dcr_share``: share of synthetic patients whose closest real patient is a
  training patient rather than a holdout patient, training subsampled to the holdout's size
  (ties count one half). 0.5 ideal, 1.0 = every synthetic patient sits on the training set.
- ``privacy.mia_auc``: a distance membership-inference attack: training vs holdout patients
  (equal numbers) scored by closeness to the nearest synthetic patient; its AUC. 0.5 ideal.
- ``privacy.exact_copies``: synthetic patients whose features equal a training patient's.
- ``privacy.near_copies`` / ``privacy.near_copy_share``: synthetic patients closer to a
  training patient than 95% of holdout patients are to theirs (about 5% for a fair generator).
- ``privacy.dcr_median`` / ``privacy.holdout_dcr_median``: median distance to the closest
  training patient, of synthetic and of holdout patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from diffusion.schema import Schema
from evaluation.data import align, impute_scale, patient_features


def _nearest(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    return NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)[0][:, 0]


def distances(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """Distances to the closest training patient, of synthetic and of holdout patients (for figures)."""
    fr, fs, fh = align(patient_features(real, schema), patient_features(syn, schema), patient_features(holdout, schema))
    Xr, Xs, Xh = impute_scale(fr, fs, fh)
    return {"synthetic": _nearest(Xr, Xs), "holdout": _nearest(Xr, Xh)}


def privacy(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema, *, seed: int = 0,
            subsample: int = 2000) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    fr, fs, fh = align(patient_features(real, schema), patient_features(syn, schema), patient_features(holdout, schema))
    Xr_all, Xs_all, Xh_all = impute_scale(fr, fs, fh)
    n = min(len(Xr_all), len(Xh_all), subsample)

    def pick(X: np.ndarray, k: int) -> np.ndarray:
        return X[np.sort(rng.choice(len(X), size=k, replace=False))] if k < len(X) else X

    Xr, Xh, Xs = pick(Xr_all, n), pick(Xh_all, n), pick(Xs_all, min(len(Xs_all), subsample))
    d_train, d_hold = _nearest(Xr, Xs), _nearest(Xh, Xs)
    tie = np.isclose(d_train, d_hold, rtol=1e-9, atol=1e-12)
    share = float(np.mean(np.where(tie, 0.5, (d_train < d_hold).astype(float))))
    score = -np.r_[_nearest(Xs, Xr), _nearest(Xs, Xh)]
    mia = float(roc_auc_score(np.r_[np.ones(len(Xr)), np.zeros(len(Xh))], score))
    d_syn = _nearest(Xr_all, Xs_all)
    d_hold_all = _nearest(Xr_all, Xh_all)
    threshold = float(np.quantile(d_hold_all, 0.05))
    near = d_syn < threshold
    return {
        "privacy.dcr_share": share,
        "privacy.mia_auc": mia,
        "privacy.exact_copies": float(np.sum(d_syn < 1e-9)),
        "privacy.near_copies": float(np.sum(near)),
        "privacy.near_copy_share": float(np.mean(near)),
        "privacy.dcr_median": float(np.median(d_syn)),
        "privacy.holdout_dcr_median": float(np.median(d_hold_all)),
    }
