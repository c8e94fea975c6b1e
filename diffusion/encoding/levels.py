"""Patient levels and deviations: a temporal number coded as the patient's level plus each
visit's deviation from it.

The level (static channel) is the patient's mean of the scaled values, min-max rescaled over
the training patients between the k-th lowest and k-th highest patient (so no single patient's
level is stored). The deviation (temporal channel) is the scaled value minus the level, divided
by the cohort's within-patient spread (its 99th percentile |deviation| maps to 1; rarer, larger
ones go beyond, up to ``bound``); with quantile coding it is further mapped through its
quantiles onto a normal shape. The denoiser then sees visit-to-visit change at full scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from diffusion.encoding.numeric import marginal_knots
from diffusion.privacy.protection import k_bounds

DeviationCoding = Literal["linear", "quantile"]
NORMAL_99 = float(stats.norm.ppf(0.995))  # a quantile-coded deviation at the 99th |percentile| is ~1, as a linear one


def patient_mean(values: np.ndarray, present: np.ndarray, pid: np.ndarray, n: int | None = None) -> np.ndarray:
    """Each patient's mean of the present values (0 for a patient with none)."""
    n = (int(pid.max()) + 1 if len(pid) else 0) if n is None else n
    total = np.bincount(pid, weights=np.where(present, values, 0.0), minlength=n)
    count = np.bincount(pid, weights=present.astype(float), minlength=n)
    return np.where(count > 0, total / np.maximum(count, 1.0), 0.0)


def normal_table(d: np.ndarray, knots: int = 41) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots (x: deviation quantiles, u: normal scores / NORMAL_99), both strictly increasing; the
    u grid spans the normal scores an n-value sample reaches (at most +/-3.5) and the x ends are
    the extreme deviations (after protection), so every training value lies inside the table."""
    edge = float(min(3.5, stats.norm.ppf(1.0 - 0.5 / d.size)))
    u = np.linspace(-edge, edge, knots)
    x = np.quantile(d, stats.norm.cdf(u))
    x[0], x[-1] = d.min(), d.max()
    xs, inverse = np.unique(x, return_inverse=True)
    us = np.bincount(inverse, weights=u) / np.bincount(inverse)  # tied quantiles (a point mass) share one knot
    return tuple(xs.tolist()), tuple((us / NORMAL_99).tolist())


@dataclass(frozen=True)
class Deviations:
    """How one number splits into a level channel and a deviation channel."""

    scale: float  # the 99th percentile |deviation| (scaled units)
    bound: float  # the largest |channel value| sampling may produce
    level_lo: float
    level_hi: float
    quantiles: tuple[float, ...] | None  # percentiles of the real deviations / scale (decoding maps onto them)
    normal_x: tuple[float, ...] | None = None  # quantile coding's table (None: linear coding)
    normal_u: tuple[float, ...] | None = None

    @classmethod
    def fit(cls, z: np.ndarray, ok: np.ndarray, pid: np.ndarray, n: int, k: int, coding: DeviationCoding) -> "Deviations":
        """From scaled values z per row, their presence ok and patient index pid (n patients)."""
        level = patient_mean(z, ok, pid, n)
        signed = (z - level[pid])[ok]
        dev = np.abs(signed)
        scale = float(np.quantile(dev, 0.99)) if dev.size else 0.0
        scale = scale if scale > 1e-6 else 1.0
        bounds = k_bounds(pd.Series(signed / scale), pd.Series(pid[ok]), k) if dev.size else None
        bound = float(max(1.0, -bounds[0], bounds[1])) if bounds else 1.0
        knots = marginal_knots(signed / scale)
        quantiles = tuple(np.clip(knots, *bounds).tolist()) if knots and bounds else knots
        table_x = table_u = None
        if coding == "quantile" and np.unique(signed).size >= 3:
            table_x, table_u = normal_table(signed / scale)
            bound = float(max(abs(table_u[0]), abs(table_u[-1])))
        has = np.bincount(pid, weights=ok.astype(float), minlength=n) > 0
        ranked = np.sort(level[has])
        kk = min(k, ranked.size)
        lo, hi = (float(ranked[kk - 1]), float(ranked[-kk])) if ranked.size else (-1.0, 1.0)
        return cls(scale, bound, lo, hi, quantiles, table_x, table_u)

    def to_channel(self, d: np.ndarray) -> np.ndarray:
        """A scaled deviation / scale -> its channel value (identity for linear coding)."""
        return d if self.normal_x is None else np.interp(d, self.normal_x, self.normal_u)

    def from_channel(self, c: np.ndarray) -> np.ndarray:
        """The inverse of `to_channel` (values beyond the table's ends go to its ends)."""
        return c if self.normal_x is None else np.interp(c, self.normal_u, self.normal_x)

    def level_channel(self, level: np.ndarray) -> np.ndarray:
        lo, hi = self.level_lo, self.level_hi
        return np.zeros_like(level) if hi <= lo else 2.0 * (level - lo) / (hi - lo) - 1.0

    def level_value(self, channel: np.ndarray) -> np.ndarray:
        return (np.clip(channel, -1.0, 1.0) + 1.0) / 2.0 * (self.level_hi - self.level_lo) + self.level_lo

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Deviations":
        return cls(**{k: (tuple(float(x) for x in v) if isinstance(v, list) else v) for k, v in raw.items()})
