"""Synthetic patient ids that keep the real ids' type and can never equal a real id.

`IdScheme.fit(real_ids)` looks at every real id (the whole extract, holdout included) and keeps
only the rule, never an id: integer ids become negative integers (-1, -2, ...) when no real id
is negative, else integers from 2**62 up when every real id lies below; text ids become
`SYN-000001`, ... with a prefix no real id starts with (`SYN-`, else `SYN2-`, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from diffusion.errors import InputError

HIGH = 2**62  # the integer range used when real ids are negative


@dataclass(frozen=True)
class IdScheme:
    kind: Literal["negative", "high", "prefix"]
    prefix: str = ""

    @classmethod
    def fit(cls, ids: pd.Series) -> "IdScheme":
        if pd.api.types.is_integer_dtype(ids) or pd.api.types.is_bool_dtype(ids):
            values = ids.dropna().astype(np.int64)
            if len(values) == 0 or values.min() >= 0:
                return cls("negative")
            if values.max() < HIGH:
                return cls("high")
            raise InputError("Patient ids span the whole integer range: no range of synthetic ids is disjoint from them.")
        text = ids.dropna().astype(str).str.upper()
        n = 1
        while text.str.startswith(f"SYN{'' if n == 1 else n}-").any():
            n += 1
        return cls("prefix", f"SYN{'' if n == 1 else n}-")

    def ids(self, n: int) -> np.ndarray:
        """The first n synthetic ids."""
        k = np.arange(1, n + 1, dtype=np.int64)
        if self.kind == "negative":
            return -k
        if self.kind == "high":
            return HIGH + k
        return np.array([f"{self.prefix}{i:06d}" for i in k], dtype=object)

    def apply(self, frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
        """`frame` with its patients renumbered in order of appearance."""
        codes, _ = pd.factorize(frame[id_column], sort=False)
        out = frame.copy()
        out[id_column] = pd.Series(self.ids(int(codes.max()) + 1 if len(codes) else 0)[codes], index=frame.index)
        if self.kind != "prefix":
            out[id_column] = out[id_column].astype(frame[id_column].dtype if frame[id_column].dtype.kind == "i" else "int64")
        return out

    def describe(self) -> str:
        if self.kind == "negative":
            return "negative integers -1, -2, ... (every real id is at least 0)"
        if self.kind == "high":
            return f"integers from {HIGH + 1} up (every real id is below {HIGH})"
        return f"text '{self.prefix}000001', '{self.prefix}000002', ... (no real id starts with '{self.prefix}')"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "IdScheme":
        return cls(raw["kind"], raw.get("prefix", ""))
