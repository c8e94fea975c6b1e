"""Value protection: what the training patients show of their tails, before anything is fitted on them.

`Protection.fit(train, schema, k)` learns, from the training patients only:
- for each number, the value of the k-th most extreme patient on each side (each patient
  counts once, by its own smallest / largest value), and likewise for the first visit's time,
  the gaps between visits and the number of visits;
- each category label seen in fewer than k patients (rare).
`apply(frame)` cuts every number to its bounds (times are rebuilt from the cut first time and
gaps, so they still increase), trims the few longest patients to the k-th longest length, and
replaces rare labels: "resample" draws a common label at the training frequencies (one draw per
patient), "merge" writes `RARE`. The encoder is fitted on protected patients, so no released
value lies beyond what k patients share and no stored statistic hangs on fewer than k; the
evaluation protects its real frames the same way, so reports show no single patient's extreme,
and every sampled set passes through `apply` too, so the guarantee holds whatever the network
emits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from diffusion.data.labels import as_binary, as_labels
from diffusion.data.schema import Column, Schema
from diffusion.errors import InputError

RARE = "_RARE_"


def k_bounds(values: pd.Series, patient: pd.Series, k: int) -> tuple[float, float] | None:
    """(k-th smallest patient minimum, k-th largest patient maximum); None with < k patients."""
    ok = values.notna()
    g = values[ok].astype(float).groupby(patient[ok])
    lows, highs = np.sort(g.min().to_numpy()), np.sort(g.max().to_numpy())
    if lows.size < k:
        return None
    return float(lows[k - 1]), float(highs[-k])


def _labels(series: pd.Series, col: Column) -> pd.Series:
    if col.type == "binary":
        return as_binary(series).map(lambda v: None if pd.isna(v) else str(int(v)))
    return as_labels(series)


@dataclass
class Protection:
    """Bounds and rare labels fitted on training patients (JSON-able aggregates)."""

    k: int
    rare_mode: Literal["resample", "merge"] = "resample"
    bounds: dict[str, list[float]] = field(default_factory=dict)  # column -> [low, high]
    t0: list[float] | None = None
    gap: list[float] | None = None
    max_visits: int | None = None
    # column -> label -> share, for each column where some label is seen in < k patients: the
    # labels k patients share; any other label is rare (the rare ones themselves are not kept)
    common: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: pd.DataFrame, schema: Schema, k: int, rare_mode: str = "resample") -> "Protection":
        ids = train[schema.id]
        if ids.nunique() < k:
            raise InputError(
                f"The training patients number {ids.nunique()}, fewer than privacy.k = {k}: no value can be "
                "shared by k patients, so nothing can be released."
            )
        p = cls(k=k, rare_mode="resample" if rare_mode not in ("resample", "merge") else rare_mode)  # type: ignore[arg-type]
        for col in schema.columns:
            if col.numeric:
                b = k_bounds(pd.to_numeric(train[col.name], errors="coerce"), ids, k)
                if b is None:
                    raise InputError(
                        f"Column '{col.name}' has values for fewer than privacy.k = {k} training patients, so "
                        "none of its values is shared by k patients; drop it from the schema or lower privacy.k."
                    )
                p.bounds[col.name] = list(b)
                continue
            labels = _labels(train[col.name], col)
            patients = labels.groupby(ids).agg(lambda s: set(s.dropna()))
            seen = pd.Series([lab for labs in patients for lab in labs]).value_counts()
            if (seen < k).any():
                common = seen[seen >= k]
                p.common[col.name] = (common / common.sum()).to_dict() if len(common) else {}
        if not schema.regular:
            ordered = train.sort_values([schema.id, schema.time], kind="mergesort")
            t = pd.to_numeric(ordered[schema.time], errors="coerce")
            first = t.groupby(ordered[schema.id]).transform("first")
            b0 = k_bounds(first, ordered[schema.id], k)
            p.t0 = list(b0) if b0 else None
            gaps = t.groupby(ordered[schema.id]).diff()
            bg = k_bounds(gaps, ordered[schema.id], k)
            p.gap = list(bg) if bg else None
        lengths = np.sort(ids.value_counts().to_numpy())
        p.max_visits = int(lengths[-k])
        return p

    def schema(self, schema: Schema) -> Schema:
        """The schema the model is fitted with: rare labels are no categories of it (the network
        has no channel for them), and with `merge` RARE is one."""
        if not self.common:
            return schema
        raw = schema.to_dict()
        for name, common in self.common.items():
            col = raw["columns"][name]
            if col.get("type") != "categorical":
                continue
            kept = [c for c in col["categories"] if c in common]
            if self.rare_mode == "merge":
                kept.append(RARE)
            if kept:
                col["categories"] = kept
        return Schema.from_dict(raw, source=f"schema {schema.name}")

    def apply(self, df: pd.DataFrame, schema: Schema, seed: int = 0) -> pd.DataFrame:
        """A protected copy of a long extract (any patients: training, holdout); rows keep their order."""
        rng = np.random.default_rng(seed)
        out = df.copy()
        for name, (lo, hi) in self.bounds.items():
            v = pd.to_numeric(out[name], errors="coerce")
            clipped = v.clip(lo, hi)
            out[name] = clipped.astype(out[name].dtype) if pd.api.types.is_integer_dtype(out[name]) else clipped
        for name in self.common:
            out[name] = self._relabel(out, schema, schema.column(name), rng)
        if not schema.regular and (self.t0 is not None or self.gap is not None):
            out[schema.time] = self._times(out, schema)
        if self.max_visits is not None:
            order = out.sort_values([schema.id, schema.time], kind="mergesort")
            visit = order.groupby(schema.id, sort=False).cumcount()
            out = out.loc[sorted(order.index[visit < self.max_visits])]
        return out

    def _relabel(self, df: pd.DataFrame, schema: Schema, col: Column, rng: np.random.Generator) -> pd.Series:
        common = self.common[col.name]
        labels = _labels(df[col.name], col)
        hit = labels.notna() & ~labels.isin(list(common)) & (labels != RARE)
        if not hit.any():
            return df[col.name]
        values = df[col.name].astype(object).copy()
        if self.rare_mode == "merge" and col.type == "categorical":
            values[hit] = RARE
            return values
        if not common:  # every label is rare: nothing k patients share can stand in
            values[hit] = None
            return values
        patients = df.loc[hit, schema.id].unique()
        draw = dict(zip(patients, rng.choice(list(common), size=len(patients), p=np.array(list(common.values())))))
        replaced = df.loc[hit, schema.id].map(draw)
        if col.type == "binary":  # back to the column's own spelling of 0 / 1
            replaced = replaced.astype(int)
        values[hit] = replaced.to_numpy()
        return values

    def _times(self, df: pd.DataFrame, schema: Schema) -> pd.Series:
        order = df.sort_values([schema.id, schema.time], kind="mergesort")
        t = pd.to_numeric(order[schema.time], errors="coerce").astype(float)
        g = t.groupby(order[schema.id], sort=False)
        first, gaps = g.transform("first"), g.diff()
        if self.t0 is not None:
            first = first.clip(*self.t0)
        if self.gap is not None:
            gaps = gaps.clip(*self.gap)
        rebuilt = first + gaps.fillna(0.0).groupby(order[schema.id], sort=False).cumsum()
        if pd.api.types.is_integer_dtype(df[schema.time]):
            rebuilt = rebuilt.round().astype(df[schema.time].dtype)
        return rebuilt.reindex(df.index)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Protection":
        return cls(**raw)
