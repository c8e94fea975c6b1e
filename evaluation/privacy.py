"""Privacy: are synthetic patients closer to the training patients than to real patients the model never saw?

A generator that learned the population puts its synthetic patients as close to real patients
it never saw (the holdout) as to those it trained on; one that memorised puts them on top of
training patients. Distances are Euclidean between `patient_features` rows, median-imputed and
standardised with the training patients' statistics. Every measure comes with a bootstrap 95%
interval (synthetic, training and holdout patients resampled together, `BOOTSTRAP` draws; the
training set each synthetic patient is compared with stays whole, since it is the set that may
have been memorised), as
``<name>.ci_low`` / ``<name>.ci_high``; the release gates read ``ci_low``, so a release is
blocked on evidence of memorisation, not on the noise of a small holdout.

- ``privacy.dcr_share``: share of synthetic patients whose closest real patient is a training
  rather than a holdout patient (ties count one half), adjusted for the sizes of the two sets
  so that 0.5 is what a fair generator gets and 1.0 means every synthetic patient sits closer to
  the training set (`adjusted_share`). ``dcr_share_raw`` is the unadjusted share,
  ``dcr_share_expected`` a fair generator's raw share n_train / (n_train + n_holdout).
- ``privacy.mia_auc``: a distance membership-inference attack: training vs holdout patients
  scored by closeness to the nearest synthetic patient; its AUC. 0.5 ideal.
- ``privacy.near_copy_share``: synthetic patients whose distance to the closest training patient,
  relative to the closest holdout patient, is smaller than that ratio is for 95% of real
  patients (`NEAR_QUANTILE`; a real patient's ratio leaves the patient itself out): about 0.05
  for a fair generator, far more for one that copies patients with a little jitter. A ratio, so
  a generator that favours the dense middle of the population is not taken for a copier.
  ``near_copies`` counts them.
- ``privacy.exact_copies`` / ``exact_copy_share``: synthetic patients whose whole trajectory
  equals a training patient's at each column's recorded precision (`recorded_decimals`);
  ``exact_copy_share_real`` the share of holdout patients that equal a training patient (common
  where values are few: binary outcomes over four visits), and ``exact_copy_excess`` the
  difference, with its interval: what a generator copies beyond what real patients share.
- ``privacy.dcr_median`` / ``privacy.holdout_dcr_median``: median distance to the closest
  training patient, of synthetic and of holdout patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import pairwise_distances

from diffusion.data.schema import Schema
from evaluation.data import PID, align, impute_scale, patient_features

BOOTSTRAP = 200  # resamples behind each 95% interval
NEAR_QUANTILE = 0.05  # a near copy is closer to training than this share of holdout patients are
MAX_DECIMALS = 6  # finer than this a column counts as continuous (compared at 6 decimals)
INTERVAL = ("privacy.dcr_share", "privacy.mia_auc", "privacy.near_copy_share", "privacy.exact_copy_excess")


def recorded_decimals(values: pd.Series) -> int:
    """The decimals a column is recorded at: the fewest d <= MAX_DECIMALS that every value fits."""
    v = values.dropna().to_numpy(float)
    for d in range(MAX_DECIMALS + 1):
        if np.all(np.abs(v * 10.0**d - np.round(v * 10.0**d)) <= 1e-6):
            return d
    return MAX_DECIMALS


def _trajectory_keys(df: pd.DataFrame, columns: list[str], decimals: dict[str, int]) -> pd.Series:
    """One string per patient: every visit's values, rounded to the recorded precision."""
    parts = []
    for c in columns:
        s = df[c]
        if c in decimals:
            s = pd.to_numeric(s, errors="coerce").round(decimals[c])
        parts.append(s.astype(str))
    rows = pd.concat(parts, axis=1).agg("|".join, axis=1) if parts else pd.Series("", index=df.index)
    return rows.groupby(df[PID], sort=True).agg("/".join)


def twins(real: pd.DataFrame, *others: pd.DataFrame, schema: Schema) -> list[np.ndarray]:
    """For each frame in `others`, whether each of its patients' trajectory (times and every
    column) equals a training patient's, each number at the precision the real extract records it."""
    columns = [schema.time, *schema.column_names]
    numeric = [schema.time, *[c.name for c in schema.columns if c.numeric]]
    decimals = {c: recorded_decimals(pd.to_numeric(real[c], errors="coerce")) for c in numeric}
    reference = set(_trajectory_keys(real, columns, decimals))
    return [_trajectory_keys(f, columns, decimals).isin(reference).to_numpy() for f in others]


def exact_copies(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> int:
    """Synthetic patients whose trajectory equals a training patient's (see `twins`)."""
    return int(twins(real, syn, schema=schema)[0].sum())


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC of scores (ties count one half)."""
    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def adjusted_share(raw: float, p0: float) -> float:
    """Map a raw closer-to-training share onto 0.5 = fair, 1 = always closer to training.

    `p0` is the share a fair generator gets: with n_t training and n_h holdout patients,
    exchangeable with the synthetic ones, the closest of the n_t + n_h is a training patient
    with probability n_t / (n_t + n_h). Piecewise linear: 0 -> 0, p0 -> 0.5, 1 -> 1.
    """
    if raw <= p0:
        return 0.5 * raw / p0
    return 0.5 + 0.5 * (raw - p0) / (1.0 - p0)


def _measures(d: dict[str, np.ndarray], s: np.ndarray, t: np.ndarray, h: np.ndarray) -> dict[str, float]:
    """The distance measures for the synthetic, training and holdout patients picked by s, t, h
    (indices; repeats allowed). The training set a synthetic set may have memorised is fixed, so
    each synthetic patient's closest training patient is sought among all of them; t picks the
    training patients that pose as members and as real references. `d` holds the distance
    matrices "st", "sh", "ht", "th", "hh", "tt" (the last two with an infinite diagonal: a
    patient is not its own neighbour)."""
    d_train, d_hold = d["st"][s].min(axis=1), d["sh"][np.ix_(s, h)].min(axis=1)
    tie = np.isclose(d_train, d_hold, rtol=1e-9, atol=1e-12)
    raw = float(np.mean(np.where(tie, 0.5, (d_train < d_hold).astype(float))))
    p0 = d["st"].shape[1] / (d["st"].shape[1] + np.unique(h).size)
    # membership inference: the closer a real patient is to some synthetic patient, the likelier a member
    member, non_member = -d["st"][np.ix_(s, t)].min(axis=0), -d["sh"][np.ix_(s, h)].min(axis=0)
    # a near copy sits far closer to the training set than to the holdout, as no real patient does
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero distance: an infinite or undefined ratio
        real = np.r_[
            d["ht"][h].min(axis=1) / d["hh"][np.ix_(h, h)].min(axis=1), d["tt"][t].min(axis=1) / d["th"][np.ix_(t, h)].min(axis=1)
        ]
        near = d_train / d_hold < np.quantile(np.nan_to_num(real, nan=1.0, posinf=np.inf), NEAR_QUANTILE)
    return {
        "privacy.dcr_share": adjusted_share(raw, p0),
        "privacy.dcr_share_raw": raw,
        "privacy.dcr_share_expected": p0,
        "privacy.mia_auc": _auc(member, non_member),
        "privacy.near_copy_share": float(near.mean()),
        "privacy.near_copies": float(near.sum()),
    }


def _features(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema) -> list[np.ndarray]:
    fr, fs, fh = align(patient_features(real, schema), patient_features(syn, schema), patient_features(holdout, schema))
    return impute_scale(fr, fs, fh)


def distances(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """Distances to the closest training patient, of synthetic and of holdout patients (for figures)."""
    Xr, Xs, Xh = _features(real, syn, holdout, schema)
    return {"synthetic": pairwise_distances(Xs, Xr).min(axis=1), "holdout": pairwise_distances(Xh, Xr).min(axis=1)}


def privacy(
    real: pd.DataFrame,
    syn: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Schema,
    *,
    seed: int = 0,
    subsample: int = 2000,
    bootstrap: int = BOOTSTRAP,
) -> dict[str, float]:
    """Every privacy measure of `syn` against training patients `real` and unseen patients
    `holdout` (tidy frames), with bootstrap 95% intervals; seeded.

    Sets larger than `subsample` patients are subsampled (the training : holdout ratio kept),
    so the cost is bounded whatever the cohort's size.
    """
    rng = np.random.default_rng(seed)
    Xr, Xs, Xh = _features(real, syn, holdout, schema)

    def pick(X: np.ndarray, k: int) -> np.ndarray:
        return X[np.sort(rng.choice(len(X), size=k, replace=False))] if k < len(X) else X

    scale = min(1.0, subsample / max(len(Xr), len(Xh)))
    Xr = pick(Xr, max(1, int(round(len(Xr) * scale))))
    Xh = pick(Xh, max(1, int(round(len(Xh) * scale))))
    Xs = pick(Xs, min(len(Xs), subsample))
    pairs = {"st": (Xs, Xr), "sh": (Xs, Xh), "ht": (Xh, Xr), "th": (Xr, Xh), "hh": (Xh, Xh), "tt": (Xr, Xr)}
    d = {k: pairwise_distances(a, b) for k, (a, b) in pairs.items()}
    np.fill_diagonal(d["hh"], np.inf)
    np.fill_diagonal(d["tt"], np.inf)
    idx = np.arange(len(Xs)), np.arange(len(Xr)), np.arange(len(Xh))
    syn_twin, hold_twin = twins(real, syn, holdout, schema=schema)

    def measures(s: np.ndarray, t: np.ndarray, h: np.ndarray, st: np.ndarray, ht: np.ndarray) -> dict[str, float]:
        return _measures(d, s, t, h) | {"privacy.exact_copy_excess": float(syn_twin[st].mean() - hold_twin[ht].mean())}

    every = (*idx, np.arange(len(syn_twin)), np.arange(len(hold_twin)))
    out = measures(*every)
    draws = [measures(*(rng.choice(len(i), size=len(i)) for i in every)) for _ in range(bootstrap)]
    for name in INTERVAL:
        values = np.array([d[name] for d in draws])
        out[f"{name}.ci_low"], out[f"{name}.ci_high"] = (float(v) for v in np.quantile(values, [0.025, 0.975]))
    out["privacy.exact_copies"] = float(syn_twin.sum())
    out["privacy.exact_copy_share"], out["privacy.exact_copy_share_real"] = float(syn_twin.mean()), float(hold_twin.mean())
    out["privacy.dcr_median"] = float(np.median(d["st"].min(axis=1)))
    out["privacy.holdout_dcr_median"] = float(np.median(d["ht"].min(axis=1)))
    return out
