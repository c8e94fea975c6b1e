"""Numeric codecs: one number's transform (Box-Cox / log / none), its min-max scaling to [-1, 1],
the decimals the extract records it at, its bounds, and the percentiles of its scaled values.

`NumberCodec.fit` reads the observed values of one column (or the gaps, or the first times);
`scale` maps values to [-1, 1], `unscale` maps back, rounded to the recorded precision and kept
inside the bounds. A codec is frozen, plain JSON through `to_dict` / `from_dict`; its bounds are
those `diffusion.privacy.protection` left (never one patient's extreme value).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

Transform = Literal["none", "log", "boxcox"]
MAX_DECIMALS = 6  # finer than this, a real column counts as continuous and is never rounded
MARGINAL_KNOTS = 101  # percentiles kept of each scaled number: its real marginal


def recorded_decimals(values: np.ndarray) -> int | None:
    """The decimal places a real column is recorded at (10.6 -> 1, 261.0 -> 0): the smallest
    d <= MAX_DECIMALS with every value on the 10^-d grid; None for a continuous column. Synthetic
    values are rounded to it, since unrounded values are implausible and easy to tell apart."""
    if values.size == 0:
        return None
    for d in range(MAX_DECIMALS + 1):
        scaled = values * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6):
            return d
    return None


def marginal_knots(z: np.ndarray) -> tuple[float, ...] | None:
    """The percentiles (0, 1, ..., 100) of values z (finite ones); None without any."""
    z = z[np.isfinite(z)]
    return tuple(np.quantile(z, np.linspace(0.0, 1.0, MARGINAL_KNOTS)).tolist()) if z.size else None


@dataclass(frozen=True)
class NumberCodec:
    """Transform + min-max scaling of one number; vmin / vmax bound what decoding returns."""

    transform: Transform
    lower: float
    delta: float
    lam: float
    lo: float  # transformed range, mapped to [-1, 1]
    hi: float
    vmin: float
    vmax: float
    integer: bool
    decimals: int | None
    quantiles: tuple[float, ...] | None  # percentiles of the scaled training values

    @classmethod
    def fit(cls, values: np.ndarray, transform: Transform | None, integer: bool) -> "NumberCodec":
        """Fit on the observed (finite) values; `transform` None chooses Box-Cox for skewed,
        many-valued columns and none otherwise."""
        values = values[np.isfinite(values)]
        if values.size == 0:
            return cls("none", 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, integer, None, None)
        vmin, vmax = float(values.min()), float(values.max())
        span = vmax - vmin
        if transform is None:
            skew = float(stats.skew(values)) if span > 0 and np.unique(values).size > 10 else 0.0
            transform = "boxcox" if abs(skew) > 1.0 else "none"
        delta = span * 0.01 if span > 0 else 1.0
        lam = 1.0
        if transform == "boxcox" and span > 0:
            try:
                lam = float(np.clip(stats.boxcox_normmax(values - vmin + delta, method="mle"), -2.0, 2.0))
            except (ValueError, FloatingPointError):
                transform = "log"
        codec = cls(
            transform, vmin, delta, lam, 0.0, 0.0, vmin, vmax, integer, None if integer else recorded_decimals(values), None
        )
        t = codec.forward(values)
        codec = codec.replace(lo=float(t.min()), hi=float(t.max()))
        return codec.replace(quantiles=marginal_knots(codec.scale(values)))

    def replace(self, **changes: Any) -> "NumberCodec":
        return NumberCodec(**{**asdict(self), **changes})

    def forward(self, v: np.ndarray) -> np.ndarray:
        if self.transform == "none":
            return v.astype(np.float64)
        shifted = np.maximum(v - self.lower + self.delta, 1e-12)
        if self.transform == "log" or self.lam == 0.0:
            return np.log(shifted)
        return (np.power(shifted, self.lam) - 1.0) / self.lam

    def inverse(self, t: np.ndarray) -> np.ndarray:
        if self.transform == "none":
            return t
        if self.transform == "log" or self.lam == 0.0:
            return np.exp(t) - self.delta + self.lower
        return np.power(np.maximum(t * self.lam + 1.0, 1e-12), 1.0 / self.lam) - self.delta + self.lower

    def scale(self, v: np.ndarray) -> np.ndarray:
        t = self.forward(v)
        width = self.hi - self.lo
        return np.zeros_like(t) if width <= 0 else 2.0 * (t - self.lo) / width - 1.0

    def unscale(self, z: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        """Scaled values back to values within [vmin, vmax] (narrowed by a column's declared
        lo / hi), integers rounded, reals at their recorded decimals."""
        z = np.clip(z, -1.0, 1.0)
        v = self.inverse((z + 1.0) / 2.0 * (self.hi - self.lo) + self.lo)
        lo = self.vmin if lo is None else max(self.vmin, lo)
        hi = self.vmax if hi is None else min(self.vmax, hi)
        if self.integer:
            v = np.round(v)
            lo, hi = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
        elif self.decimals is not None:
            d = self.decimals
            glo, ghi = round(math.ceil(lo * 10**d - 1e-6) / 10**d, d), round(math.floor(hi * 10**d + 1e-6) / 10**d, d)
            if glo <= ghi:  # bounds narrower than one grid step: keep the values unrounded
                v, lo, hi = np.round(v, d), glo, ghi
        return np.clip(v, lo, hi)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quantiles"] = None if self.quantiles is None else list(self.quantiles)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "NumberCodec":
        q = raw.get("quantiles")
        return cls(**{**raw, "quantiles": None if q is None else tuple(float(v) for v in q)})
