"""Coverage: does every real static subgroup appear among the synthetic patients at its real share?

A subgroup is one label of one static binary or categorical column that at least `min_share`
of the real patients hold. Its share ratio is the synthetic share over the real share, with a
95% interval on the log ratio (normal approximation, half a patient added to each count, both
shares' sampling noise), so a small subgroup's ratio is not called off by chance alone.
``coverage.outside`` is how far, in log ratio, the worst subgroup's interval lies outside
[1/band, band]: 0 when every interval reaches the band, positive only on evidence that a
subgroup is under-produced (mode collapse) or over-produced. Each subgroup's ratio is reported
as ``coverage.share_ratio.<column>:<label>`` with its interval (``.ci_low``, ``.ci_high``;
characters a metric name cannot hold become ``_``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from diffusion.data.schema import Schema
from evaluation.data import PID

Z95 = 1.959964


def patients(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per patient of a tidy frame (its first visit)."""
    return frame.drop_duplicates(PID, keep="first")


def share_ratio(real: int, n_real: int, syn: int, n_syn: int) -> tuple[float, float, float]:
    """(ratio, interval low, interval high) of the synthetic share over the real share."""
    p, q = (real + 0.5) / (n_real + 1), (syn + 0.5) / (n_syn + 1)
    sd = math.sqrt((1 - q) / ((n_syn + 1) * q) + (1 - p) / ((n_real + 1) * p))
    log_r = math.log(q / p)
    return math.exp(log_r), math.exp(log_r - Z95 * sd), math.exp(log_r + Z95 * sd)


def coverage(real: list[pd.DataFrame], syn: pd.DataFrame, schema: Schema, *, band: float, min_share: float) -> dict[str, float]:
    """Coverage measures of `syn` against the real patients of the tidy frames `real` (pooled)."""
    labels = [c for c in schema.static_columns if not c.numeric]
    if not labels:
        return {}
    r = pd.concat([patients(f) for f in real], ignore_index=True)
    s = patients(syn)
    out: dict[str, float] = {}
    worst = 0.0
    for col in labels:
        real_counts, syn_counts = r[col.name].value_counts(), s[col.name].value_counts()
        for label, count in real_counts.items():
            if count < min_share * len(r):
                continue
            name = f"{int(label)}" if col.type == "binary" else re.sub(r"[^A-Za-z0-9_.\- /]", "_", str(label))
            ratio, lo, hi = share_ratio(int(count), len(r), int(syn_counts.get(label, 0)), len(s))
            key = f"coverage.share_ratio.{col.name}:{name}"
            out[key], out[f"{key}.ci_low"], out[f"{key}.ci_high"] = ratio, lo, hi
            worst = max(worst, math.log(1 / band) - math.log(hi), math.log(lo) - math.log(band))
    if not out:
        return {}
    out["coverage.outside"] = float(worst)
    ratios = np.array([v for k, v in out.items() if k.startswith("coverage.share_ratio.") and not k.endswith(("_low", "_high"))])
    out["coverage.min_ratio"], out["coverage.max_ratio"] = float(ratios.min()), float(ratios.max())
    return out
