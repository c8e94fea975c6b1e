"""Distance-based privacy on standardised patient feature vectors, judged against a real holdout.

A generator that learned the population puts its synthetic patients as close to real patients
it never saw (the holdout) as to those it trained on; one that memorised puts them on top of
training patients. All distances are Euclidean on `patient_features`, median-imputed and
standardised with the training patients' statistics.

- ``privacy.dcr_share``: share of synthetic patients whose closest real patient is a
  training patient rather than a holdout patient (ties count one half), adjusted for the
  sizes of the two sets so that 0.5 is what a fair generator gets and 1.0 means every
  synthetic patient sits closer to the training set (see `adjusted_share`). With equal sizes
  it is the plain share. ``privacy.dcr_share_raw`` is the unadjusted share and
  ``privacy.dcr_share_expected`` a fair generator's raw share, n_train / (n_train + n_holdout).
  (Subsampling the training set to the holdout's size instead would hide memorisation: copies
  of the training patients left out would count as fair.)
- ``privacy.mia_auc``: a distance membership-inference attack: training vs holdout patients
  scored by closeness to the nearest synthetic patient; its AUC. 0.5 ideal.
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


def exact_copies(reference: pd.DataFrame, query: pd.DataFrame) -> int:
    """Query rows equal to some reference row (features rounded to 9 significant digits; NaN = NaN)."""
    def keys(f: pd.DataFrame) -> pd.Series:
        rounded = f.apply(lambda c: c.map(lambda v: "nan" if pd.isna(v) else f"{v:.9g}"))
        return rounded.agg("|".join, axis=1)

    return int(keys(query).isin(set(keys(reference))).sum())


def _nearest(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    return NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(query)[0][:, 0]


def distances(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """Distances to the closest training patient, of synthetic and of holdout patients (for figures)."""
    fr, fs, fh = align(patient_features(real, schema), patient_features(syn, schema), patient_features(holdout, schema))
    Xr, Xs, Xh = impute_scale(fr, fs, fh)
    return {"synthetic": _nearest(Xr, Xs), "holdout": _nearest(Xr, Xh)}


def adjusted_share(raw: float, p0: float) -> float:
    """Map a raw closer-to-training share onto 0.5 = fair, 1 = always closer to training.

    `p0` is the share a fair generator gets: with n_t training and n_h holdout patients,
    exchangeable with the synthetic ones, the closest of the n_t + n_h is a training patient
    with probability n_t / (n_t + n_h). Piecewise linear: 0 -> 0, p0 -> 0.5, 1 -> 1.
    """
    if raw <= p0:
        return 0.5 * raw / p0
    return 0.5 + 0.5 * (raw - p0) / (1.0 - p0)


def privacy(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema, *, seed: int = 0,
            subsample: int = 2000) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    fr, fs, fh = align(patient_features(real, schema), patient_features(syn, schema), patient_features(holdout, schema))
    Xr, Xs, Xh = impute_scale(fr, fs, fh)

    def pick(X: np.ndarray, k: int) -> np.ndarray:
        return X[np.sort(rng.choice(len(X), size=k, replace=False))] if k < len(X) else X

    # large cohorts: subsample, keeping the training : holdout ratio
    scale = min(1.0, subsample / max(len(Xr), len(Xh)))
    Xr_s = pick(Xr, max(1, int(round(len(Xr) * scale))))
    Xh_s = pick(Xh, max(1, int(round(len(Xh) * scale))))
    Xs_s = pick(Xs, min(len(Xs), subsample))
    d_train, d_hold = _nearest(Xr_s, Xs_s), _nearest(Xh_s, Xs_s)
    tie = np.isclose(d_train, d_hold, rtol=1e-9, atol=1e-12)
    raw = float(np.mean(np.where(tie, 0.5, (d_train < d_hold).astype(float))))
    p0 = len(Xr_s) / (len(Xr_s) + len(Xh_s))
    # membership inference: training vs holdout patients, the closer to a synthetic patient the likelier a member
    score = -np.r_[_nearest(Xs_s, Xr_s), _nearest(Xs_s, Xh_s)]
    mia = float(roc_auc_score(np.r_[np.ones(len(Xr_s)), np.zeros(len(Xh_s))], score))
    d_syn = _nearest(Xr, Xs)
    d_hold_all = _nearest(Xr, Xh)
    threshold = float(np.quantile(d_hold_all, 0.05))
    near = d_syn < threshold
    return {
        "privacy.dcr_share": adjusted_share(raw, p0),
        "privacy.dcr_share_raw": raw,
        "privacy.dcr_share_expected": p0,
        "privacy.mia_auc": mia,
        "privacy.exact_copies": float(exact_copies(fr, fs)),
        "privacy.near_copies": float(np.sum(near)),
        "privacy.near_copy_share": float(np.mean(near)),
        "privacy.dcr_median": float(np.median(d_syn)),
        "privacy.holdout_dcr_median": float(np.median(d_hold_all)),
    }
