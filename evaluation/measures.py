"""Fidelity, temporal, discrimination, utility and privacy measures on long extracts.

Pure functions of (real, synthetic, schema): plain pandas / numpy / scikit-learn / sdmetrics.
Every random choice takes a seed, so every number is repeatable.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors

from diffusion.schema import Column, Schema, as_binary, as_labels

log = logging.getLogger(__name__)


# ---- preparation ---------------------------------------------------------------------------------
def tidy(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Schema columns only, sorted by (id, time); numbers numeric, categoricals canonical labels."""
    cols = [schema.id, schema.time, *schema.column_names]
    out = df[[c for c in cols if c in df.columns]].copy()
    out[schema.time] = pd.to_numeric(out[schema.time], errors="coerce")
    for col in schema.columns:
        if col.name not in out:
            continue
        if col.numeric:
            out[col.name] = pd.to_numeric(out[col.name], errors="coerce").astype(float)
        elif col.type == "binary":
            out[col.name] = as_binary(out[col.name])
        else:
            out[col.name] = as_labels(out[col.name])
    return out.sort_values([schema.id, schema.time], kind="mergesort").reset_index(drop=True)


def _numeric_temporal(schema: Schema) -> list[Column]:
    return [c for c in schema.temporal_columns if c.numeric]


def patient_features(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """One numeric row per patient: length, gaps, static values, per-lab summaries and missingness."""
    g = df.groupby(schema.id, sort=True)
    feats: dict[str, pd.Series] = {"n_visits": g.size().astype(float)}
    gaps = df.groupby(schema.id, sort=True)[schema.time].diff()
    feats["gap_mean"] = gaps.groupby(df[schema.id]).mean()
    feats["gap_std"] = gaps.groupby(df[schema.id]).std()
    feats["t_first"] = g[schema.time].first()
    pos = g.cumcount().astype(float)
    for col in schema.columns:
        s = df[col.name]
        if col.static:
            first = g[col.name].first()
            if col.type == "categorical":
                for cat in col.categories or ():
                    feats[f"{col.name}={cat}"] = (first == cat).astype(float)
            else:
                feats[col.name] = first.astype(float)
            continue
        if col.nullable:
            feats[f"{col.name}.missing"] = s.isna().groupby(df[schema.id]).mean()
        if col.type == "categorical":
            for cat in col.categories or ():
                feats[f"{col.name}={cat}.share"] = (s == cat).groupby(df[schema.id]).mean()
            feats[f"{col.name}.last_code"] = g[col.name].last().map({c: i for i, c in enumerate(col.categories or ())}).astype(float)
            continue
        v = s.astype(float)
        gv = v.groupby(df[schema.id])
        feats[f"{col.name}.mean"] = gv.mean()
        feats[f"{col.name}.std"] = gv.std()
        feats[f"{col.name}.first"] = gv.first()
        feats[f"{col.name}.last"] = gv.last()
        if col.numeric:
            # slope of value on visit index, per patient (covariance / variance)
            tmp = pd.DataFrame({"id": df[schema.id], "v": v, "p": pos}).dropna()
            tmp["pv"] = tmp["p"] * tmp["v"]
            tmp["pp"] = tmp["p"] ** 2
            a = tmp.groupby("id").agg(n=("v", "size"), sv=("v", "sum"), sp=("p", "sum"), spv=("pv", "sum"), spp=("pp", "sum"))
            den = a["n"] * a["spp"] - a["sp"] ** 2
            feats[f"{col.name}.slope"] = ((a["n"] * a["spv"] - a["sp"] * a["sv"]) / den.where(den > 0)).reindex(feats["n_visits"].index)
    out = pd.DataFrame(feats)
    out.index.name = None
    return out


def _impute_scale(train: pd.DataFrame, *others: pd.DataFrame) -> list[np.ndarray]:
    """Median-impute and standardise every frame with the first frame's statistics."""
    cols = train.columns
    med = train.median()
    mu = train.fillna(med).mean()
    sd = train.fillna(med).std().replace(0, 1).fillna(1)
    return [((f.reindex(columns=cols).fillna(med) - mu) / sd).fillna(0.0).to_numpy(float) for f in (train, *others)]


# ---- fidelity ------------------------------------------------------------------------------------
def marginals(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """KS complement (numbers) / TV complement (labels), static columns at patient level."""
    out = {}
    rs = real.groupby(schema.id).first()
    ss = syn.groupby(schema.id).first()
    for col in schema.columns:
        a = (rs if col.static else real)[col.name].dropna()
        b = (ss if col.static else syn)[col.name].dropna()
        if len(a) == 0 or len(b) == 0:
            continue
        if col.numeric:
            out[f"fidelity.ks_complement.{col.name}"] = 1.0 - float(stats.ks_2samp(a, b).statistic)
        else:
            pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
            idx = pa.index.union(pb.index)
            out[f"fidelity.tv_complement.{col.name}"] = 1.0 - 0.5 * float((pa.reindex(idx, fill_value=0) - pb.reindex(idx, fill_value=0)).abs().sum())
    vals = list(out.values())
    out["fidelity.marginal_score"] = float(np.mean(vals)) if vals else float("nan")
    return out


def correlation_matrix(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    cols = [c.name for c in schema.columns if c.numeric or c.type == "binary"]
    return df[cols].astype(float).corr(method="spearman")


def correlations(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    cr, cs = correlation_matrix(real, schema), correlation_matrix(syn, schema)
    iu = np.triu_indices(len(cr), 1)
    diff = np.abs(cr.to_numpy()[iu] - cs.to_numpy()[iu])
    return {"fidelity.correlation_abs_diff": float(np.nanmean(diff)) if diff.size else 0.0}


def lag1(df: pd.DataFrame, schema: Schema, column: str) -> float:
    """Lag-1 autocorrelation of a column within patients (pairs of consecutive visits)."""
    v = df[column].astype(float)
    prev = df.groupby(schema.id)[column].shift(1).astype(float)
    ok = v.notna() & prev.notna()
    if ok.sum() < 3 or v[ok].std() == 0 or prev[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(v[ok], prev[ok])[0, 1])


def stay_probability(df: pd.DataFrame, schema: Schema, column: str) -> float:
    v = df[column]
    prev = df.groupby(schema.id)[column].shift(1)
    ok = v.notna() & prev.notna()
    return float((v[ok] == prev[ok]).mean()) if ok.any() else float("nan")


def temporal(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    out: dict[str, float] = {}
    diffs = []
    for col in _numeric_temporal(schema):
        r, s = lag1(real, schema, col.name), lag1(syn, schema, col.name)
        out[f"temporal.lag1.real.{col.name}"] = r
        out[f"temporal.lag1.synthetic.{col.name}"] = s
        out[f"temporal.lag1_abs_diff.{col.name}"] = abs(r - s)
        diffs.append(abs(r - s))
    if diffs:
        out["temporal.lag1_abs_diff.max"] = float(np.nanmax(diffs))
        out["temporal.lag1_abs_diff.mean"] = float(np.nanmean(diffs))
    stays = []
    for col in schema.temporal_columns:
        if col.numeric:
            continue
        r, s = stay_probability(real, schema, col.name), stay_probability(syn, schema, col.name)
        out[f"temporal.stay_prob_abs_diff.{col.name}"] = abs(r - s)
        stays.append(abs(r - s))
    if stays:
        out["temporal.stay_prob_abs_diff.max"] = float(np.nanmax(stays))
    lr, ls = real.groupby(schema.id).size(), syn.groupby(schema.id).size()
    pr, ps = lr.value_counts(normalize=True), ls.value_counts(normalize=True)
    idx = pr.index.union(ps.index)
    out["temporal.length_tvd"] = 0.5 * float((pr.reindex(idx, fill_value=0) - ps.reindex(idx, fill_value=0)).abs().sum())
    gr = real.groupby(schema.id)[schema.time].diff().dropna()
    gs = syn.groupby(schema.id)[schema.time].diff().dropna()
    if len(gr) and len(gs):
        out["temporal.gap_ks_complement"] = 1.0 - float(stats.ks_2samp(gr, gs).statistic)
    for col in schema.columns:
        if col.nullable:
            out[f"missing.rate_abs_diff.{col.name}"] = abs(float(real[col.name].isna().mean()) - float(syn[col.name].isna().mean()))
    miss = [v for k, v in out.items() if k.startswith("missing.rate_abs_diff.")]
    if miss:
        out["missing.rate_abs_diff.max"] = float(max(miss))
    return out


def trend_cycle(df: pd.DataFrame, schema: Schema, window: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Health Gym dynamic correlations: per patient, trend = centred moving average, cycle =
    value - trend; within-patient Pearson correlations, Fisher-z averaged over patients."""
    cols = [c.name for c in _numeric_temporal(schema)]
    k = len(cols)
    z_sum = {"trend": np.zeros((k, k)), "cycle": np.zeros((k, k))}
    z_cnt = {"trend": np.zeros((k, k)), "cycle": np.zeros((k, k))}
    values = df[cols].astype(float)
    trend = values.groupby(df[schema.id]).transform(lambda s: s.rolling(window, center=True, min_periods=1).mean())
    cycle = values - trend
    lengths = df.groupby(schema.id)[schema.id].transform("size")
    keep = lengths >= 4
    for name, frame in (("trend", trend[keep]), ("cycle", cycle[keep])):
        ids = df.loc[keep, schema.id]
        for _, block in frame.groupby(ids):
            c = block.corr().to_numpy()
            ok = np.isfinite(c)
            z = np.arctanh(np.clip(np.where(ok, c, 0.0), -0.999, 0.999))
            z_sum[name] += np.where(ok, z, 0.0)
            z_cnt[name] += ok
    out = []
    for name in ("trend", "cycle"):
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.tanh(z_sum[name] / z_cnt[name])
        np.fill_diagonal(m, 1.0)
        out.append(pd.DataFrame(m, index=cols, columns=cols))
    return out[0], out[1]


def dynamic_correlations(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    out = {}
    (rt, rc), (st, sc) = trend_cycle(real, schema), trend_cycle(syn, schema)
    if len(rt) < 2:
        return out
    iu = np.triu_indices(len(rt), 1)
    out["temporal.trend_corr_abs_diff"] = float(np.nanmean(np.abs(rt.to_numpy()[iu] - st.to_numpy()[iu])))
    out["temporal.cycle_corr_abs_diff"] = float(np.nanmean(np.abs(rc.to_numpy()[iu] - sc.to_numpy()[iu])))
    return out


def validity(syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """Shares of synthetic patients / values that respect the schema's hard rules."""
    g = syn.groupby(schema.id)
    static_cols = [c.name for c in schema.static_columns]
    if static_cols:
        constant = (g[static_cols].nunique(dropna=False) <= 1).all(axis=1)
        static_share = float(constant.mean())
    else:
        static_share = 1.0
    increasing = g[schema.time].apply(lambda s: bool(np.all(np.diff(s.to_numpy(float)) > 0)))
    inside, total = 0, 0
    for col in schema.columns:
        s = syn[col.name].dropna()
        total += len(s)
        if col.numeric:
            ok = np.isfinite(s)
            if col.min is not None:
                ok &= s >= col.min
            if col.max is not None:
                ok &= s <= col.max
            inside += int(ok.sum())
        elif col.type == "binary":
            inside += int(s.isin([0.0, 1.0]).sum())
        else:
            inside += int(s.isin(list(col.categories or ())).sum())
    return {
        "validity.static_consistency": static_share,
        "validity.time_order": float(increasing.mean()) if len(increasing) else 1.0,
        "validity.in_bounds": inside / total if total else 1.0,
    }


def sdmetrics_quality(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """sdmetrics QualityReport on the visit table and on the patient (static) table."""
    from sdmetrics.reports import QualityReport

    out = {}

    def meta(cols: list[Column], with_time: bool) -> dict[str, Any]:
        m = {"columns": {}}
        if with_time:
            m["columns"][schema.time] = {"sdtype": "numerical"}
        for c in cols:
            m["columns"][c.name] = {"sdtype": "numerical" if c.numeric else "categorical"}
        return m

    tables = {
        "visits": (real, syn, schema.temporal_columns, True),
        "patients": (real.groupby(schema.id).first().reset_index(drop=True), syn.groupby(schema.id).first().reset_index(drop=True),
                     schema.static_columns, False),
    }
    scores = []
    for name, (r, s, cols, with_time) in tables.items():
        if not cols:
            continue
        keep = ([schema.time] if with_time else []) + [c.name for c in cols]
        r2, s2 = r[keep].copy(), s[keep].copy()
        for c in cols:
            if not c.numeric:
                r2[c.name] = r2[c.name].astype(object)
                s2[c.name] = s2[c.name].astype(object)
        rep = QualityReport()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep.generate(r2, s2, meta(cols, with_time), verbose=False)
        score = float(rep.get_score())
        out[f"fidelity.sdmetrics_quality.{name}"] = score
        props = rep.get_properties()
        for _, row in props.iterrows():
            out[f"fidelity.sdmetrics.{name}.{row['Property'].lower().replace(' ', '_')}"] = float(row["Score"])
        scores.append(score)
    out["fidelity.quality_score"] = float(np.mean(scores)) if scores else float("nan")
    return out


# ---- discrimination, utility, privacy ------------------------------------------------------------
def discriminator_auc(real: pd.DataFrame, syn: pd.DataFrame, schema: Schema, *, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated AUC of a patient-level classifier telling real from synthetic (0.5 = indistinguishable)."""
    fr, fs = patient_features(real, schema), patient_features(syn, schema)
    cols = fr.columns.union(fs.columns)
    X = pd.concat([fr.reindex(columns=cols), fs.reindex(columns=cols)]).to_numpy(float)
    y = np.r_[np.ones(len(fr)), np.zeros(len(fs))]
    folds = int(max(2, min(folds, len(fr), len(fs))))
    clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=15, random_state=seed)
    proba = cross_val_predict(clf, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def default_target(schema: Schema) -> Column | None:
    if schema.target:
        return schema.column(schema.target)
    static = [c for c in schema.static_columns if c.type in ("binary", "categorical")]
    return static[-1] if static else None


def utility(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema, *, seed: int = 0) -> dict[str, float]:
    """Train-on-synthetic / test-on-real vs train-on-real / test-on-real, for the schema's target."""
    target = default_target(schema)
    if target is None:
        return {}
    def xy(df):
        f = patient_features(df, schema)
        y = df.groupby(schema.id)[target.name].first() if target.static else df.groupby(schema.id)[target.name].last()
        drop = [c for c in f.columns if c == target.name or c.startswith(f"{target.name}=") or c.startswith(f"{target.name}.")]
        return f.drop(columns=drop), y.reindex(f.index)
    (Xr, yr), (Xs, ys), (Xh, yh) = xy(real), xy(syn), xy(holdout)
    cols = Xr.columns
    Xs, Xh = Xs.reindex(columns=cols), Xh.reindex(columns=cols)
    out = {}
    if target.numeric:
        for name, (X, y) in {"real": (Xr, yr), "synthetic": (Xs, ys)}.items():
            ok = y.notna()
            m = HistGradientBoostingRegressor(max_iter=150, random_state=seed).fit(X[ok], y[ok])
            okh = yh.notna()
            out[f"utility.r2.train_{name}"] = float(r2_score(yh[okh], m.predict(Xh[okh])))
        out["utility.gap"] = out["utility.r2.train_real"] - out["utility.r2.train_synthetic"]
        return out
    labels = sorted(set(yr.dropna().astype(str)))
    yh_s = yh.astype(str)
    if len(labels) < 2 or yh_s.nunique() < 2:
        return {}
    for name, (X, y) in {"real": (Xr, yr), "synthetic": (Xs, ys)}.items():
        y = y.astype(str)
        ok = y.notna() & (y != "None")
        if y[ok].nunique() < 2:
            out[f"utility.auc.train_{name}"] = 0.5
            continue
        m = HistGradientBoostingClassifier(max_iter=150, random_state=seed).fit(X[ok], y[ok])
        proba = pd.DataFrame(m.predict_proba(Xh), columns=m.classes_).reindex(columns=labels, fill_value=0.0)
        present = [l for l in labels if (yh_s == l).any()]
        if len(labels) == 2:
            auc = roc_auc_score((yh_s == labels[1]).astype(int), proba[labels[1]])
        else:
            aucs = [roc_auc_score((yh_s == l).astype(int), proba[l]) for l in present if 0 < (yh_s == l).sum() < len(yh_s)]
            auc = float(np.mean(aucs))
        out[f"utility.auc.train_{name}"] = float(auc)
    out["utility.gap"] = out["utility.auc.train_real"] - out["utility.auc.train_synthetic"]
    return out


def privacy(real: pd.DataFrame, syn: pd.DataFrame, holdout: pd.DataFrame, schema: Schema, *, seed: int = 0,
            subsample: int = 2000) -> dict[str, float]:
    """Distance-based privacy on standardised patient feature vectors (real train vs holdout)."""
    rng = np.random.default_rng(seed)
    fr, fs, fh = patient_features(real, schema), patient_features(syn, schema), patient_features(holdout, schema)
    n_h = min(len(fh), subsample)
    fr_eq = fr.iloc[np.sort(rng.choice(len(fr), size=min(n_h, len(fr)), replace=False))]  # same size as holdout: a fair share
    fh = fh.iloc[np.sort(rng.choice(len(fh), size=n_h, replace=False))]
    fs = fs.iloc[np.sort(rng.choice(len(fs), size=min(len(fs), subsample), replace=False))]
    Xr_all, Xr, Xs, Xh = _impute_scale(fr, fr_eq, fs, fh)
    d_train = NearestNeighbors(n_neighbors=1).fit(Xr).kneighbors(Xs)[0][:, 0]
    d_hold = NearestNeighbors(n_neighbors=1).fit(Xh).kneighbors(Xs)[0][:, 0]
    share = float(np.mean(np.where(np.isclose(d_train, d_hold), 0.5, (d_train < d_hold).astype(float))))
    # membership inference: are training patients closer to the synthetic set than holdout patients?
    nn_s = NearestNeighbors(n_neighbors=1).fit(Xs)
    score = -np.r_[nn_s.kneighbors(Xr)[0][:, 0], nn_s.kneighbors(Xh)[0][:, 0]]
    mia = float(roc_auc_score(np.r_[np.ones(len(Xr)), np.zeros(len(Xh))], score))
    d_all = NearestNeighbors(n_neighbors=1).fit(Xr_all).kneighbors(Xs)[0][:, 0]
    # near copy: closer to a training patient than 95% of unseen real patients are to theirs
    threshold = float(np.quantile(NearestNeighbors(n_neighbors=1).fit(Xr_all).kneighbors(Xh)[0][:, 0], 0.05))
    return {
        "privacy.dcr_share": share,
        "privacy.mia_auc": mia,
        "privacy.exact_copies": float(np.sum(d_all < 1e-9)),
        "privacy.near_copies": float(np.sum(d_all < threshold)),
        "privacy.near_copy_share": float(np.mean(d_all < threshold)),
        "privacy.dcr_median": float(np.median(d_all)),
    }
