"""Array operations decoding uses to give numbers their real shape: the quantile map from a
generated marginal onto the real one, deviation smoothing over a patient's visits, and
isolated spikes. Arrays are [patients, visits]; marginals are evenly spaced percentiles.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def quantile_map(z: np.ndarray, generated: Sequence[float], real: Sequence[float]) -> np.ndarray:
    """Values z moved from the generated marginal onto the real one: each value goes to the real
    quantile at its generated quantile level. Monotone, so every patient's order of visits is
    kept; a generated point mass goes to the mid level of the real quantiles it spans."""
    g, inverse = np.unique(np.asarray(generated, dtype=np.float64), return_inverse=True)
    r = np.bincount(inverse, weights=np.asarray(real, dtype=np.float64)) / np.bincount(inverse)
    return np.interp(z, g, r) if g.size > 1 else np.full_like(z, r[0])


def quantile_level(z: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """The quantile level (0..1) of values z among evenly spaced quantiles `knots` (tied knots:
    their mid level)."""
    g, inverse = np.unique(np.asarray(knots, dtype=np.float64), return_inverse=True)
    levels = np.linspace(0.0, 1.0, len(knots))
    mid = np.bincount(inverse, weights=levels) / np.bincount(inverse)
    return np.interp(z, g, mid) if g.size > 1 else np.full_like(z, mid[0])


def ks_to_knots(values: np.ndarray, knots: Sequence[float]) -> float:
    """Kolmogorov-Smirnov distance between a sample and a marginal given by its percentiles."""
    v = np.sort(values)
    levels = np.linspace(0.0, 1.0, len(knots))
    k = np.asarray(knots, dtype=np.float64)
    below, upto = np.searchsorted(v, k, side="left") / v.size, np.searchsorted(v, k, side="right") / v.size
    return float(max(np.max(levels - upto, initial=0.0), np.max(below - levels, initial=0.0)))


def smooth(d: np.ndarray, valid: np.ndarray, phi: float) -> np.ndarray:
    """Deviations d averaged over each patient's visits (valid) with weights phi^|visits apart|
    (a symmetric exponential kernel; phi 0: unchanged)."""
    if phi <= 0:
        return d
    w, v = valid.astype(np.float64), np.where(valid, d, 0.0)
    fwd, fwd_w, bwd, bwd_w = (np.zeros_like(v) for _ in range(4))
    L = d.shape[1]
    for t in range(L):
        fwd[:, t], fwd_w[:, t] = v[:, t], w[:, t]
        if t:
            fwd[:, t] += phi * fwd[:, t - 1]
            fwd_w[:, t] += phi * fwd_w[:, t - 1]
    for t in range(L - 1, -1, -1):
        bwd[:, t], bwd_w[:, t] = v[:, t], w[:, t]
        if t < L - 1:
            bwd[:, t] += phi * bwd[:, t + 1]
            bwd_w[:, t] += phi * bwd_w[:, t + 1]
    total, weight = fwd + bwd - v, fwd_w + bwd_w - w
    return np.where(valid, total / np.maximum(weight, 1e-12), d)


def neighbour_sum(a: np.ndarray) -> np.ndarray:
    """Each visit's sum of a over the visit before and the visit after it."""
    out = np.zeros_like(a)
    out[:, 1:] += a[:, :-1]
    out[:, :-1] += a[:, 1:]
    return out


def has_neighbour(valid: np.ndarray) -> np.ndarray:
    """Visits with a visit before or after them (not a patient's only visit)."""
    return neighbour_sum(valid.astype(np.float64)) > 0


def isolation(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """How far each visit's deviation departs from the mean of its neighbouring visits (0 for a
    patient's only visit and for padding)."""
    total, count = neighbour_sum(np.where(valid, d, 0.0)), neighbour_sum(valid.astype(np.float64))
    return np.where(valid & (count > 0), d - total / np.maximum(count, 1.0), 0.0)


def spike_levels(raw: np.ndarray, valid: np.ndarray, recorded: np.ndarray, sign: float, share: float) -> tuple[np.ndarray, float]:
    """The visits that decode as spikes and where they go: quantile levels [n, L] of the real
    marginal (NaN at the other visits) and the share u of the recorded visits they are.

    The spikes are the round(share x recorded visits) recorded visits with a neighbouring visit
    whose raw deviation departs furthest from their neighbours' towards `sign`, outwards in that
    order, so a set of patients decoded together holds exactly its share.
    """
    lean = sign * isolation(raw, valid)
    total = int(recorded.sum())
    candidates = recorded & has_neighbour(valid) & (lean > 0)
    k = min(int(round(share * total)), int(candidates.sum()))
    levels = np.full(raw.shape, np.nan)
    if k:
        flat = np.flatnonzero(candidates)
        order = flat[np.argsort(-lean.ravel()[flat], kind="stable")[:k]]
        out = (np.arange(k) + 0.5) / total  # plotting positions of the outermost k of the recorded visits
        levels.ravel()[order] = 1.0 - out if sign > 0 else out
    return levels, k / max(total, 1)


def visit_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per patient, the mean of values [n, L] over its visits (every patient has one)."""
    return (values * valid).sum(axis=1) / valid.sum(axis=1)
